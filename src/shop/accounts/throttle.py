"""Throttling of logins and registrations, shared by every worker and process.

Counts live in MongoDB, one document per key (an account, a client address), and expire
by a TTL index once the key has been quiet for a window. A key that reaches its limit is
blocked for a time that doubles with every further failure, up to a ceiling; a blocked key is
refused with 429 and Retry-After before any password is hashed.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from beanie import Document, Indexed
from pymongo import ReturnDocument

from shop.clock import as_utc
from shop.config import AppSettings
from shop.errors import TooManyRequests


class Attempts(Document):
    """What one key did lately: failed logins of an account, registrations from an address."""

    key: Annotated[str, Indexed(unique=True)]
    attempts: int = 0
    blocked_until: datetime | None = None
    expires_at: Annotated[datetime, Indexed(expireAfterSeconds=0)]

    class Settings:
        name = "throttle"


class Throttle:
    def __init__(
        self, *, limit: int, block: timedelta, longest_block: timedelta, window: timedelta
    ) -> None:
        self.limit = limit
        self.block = block
        self.longest_block = longest_block
        self.window = window

    async def check(self, keys: list[str], now: datetime) -> None:
        """Refuse (429, Retry-After) if any key is blocked now."""
        blocked = await Attempts.find(
            {"key": {"$in": keys}, "blocked_until": {"$gt": now}}
        ).to_list()
        if blocked:
            until = max(as_utc(a.blocked_until) for a in blocked if a.blocked_until)
            wait = math.ceil((until - now).total_seconds())
            raise TooManyRequests(f"Too many attempts; try again in {wait} s", retry_after=wait)

    async def count(self, keys: list[str], now: datetime) -> None:
        """One more attempt for each key; a key at its limit is blocked, longer each time."""
        collection = Attempts.get_pymongo_collection()
        for key in keys:
            counted = await collection.find_one_and_update(
                {"key": key},
                {"$inc": {"attempts": 1}, "$set": {"expires_at": now + self.window}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            if counted is None:  # the embedded server's answer to an upsert that raced
                counted = await collection.find_one({"key": key}) or {"attempts": 1}
            over = counted["attempts"] - self.limit
            if over >= 0:
                block = min(self.block * 2 ** min(over, 30), self.longest_block)
                await collection.update_one(
                    {"key": key},
                    {"$max": {"blocked_until": now + block, "expires_at": now + block}},
                )

    async def forget(self, key: str) -> None:
        await Attempts.get_pymongo_collection().delete_one({"key": key})


@dataclass(frozen=True)
class Throttles:
    logins: Throttle
    registrations: Throttle
    promo_codes: Throttle

    @classmethod
    def from_settings(cls, settings: AppSettings) -> "Throttles":
        hour = timedelta(hours=1)
        return cls(
            logins=Throttle(
                limit=settings.login_failures_limit,
                block=timedelta(seconds=settings.login_block_seconds),
                longest_block=timedelta(seconds=settings.login_block_max_seconds),
                window=timedelta(seconds=settings.login_window_seconds),
            ),
            registrations=Throttle(
                limit=settings.registrations_per_address,
                block=hour,
                longest_block=hour,
                window=hour,
            ),
            promo_codes=Throttle(
                limit=settings.promo_code_failures_limit,
                block=timedelta(minutes=1),
                longest_block=hour,
                window=hour,
            ),
        )
