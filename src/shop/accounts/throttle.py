"""Throttling of logins, registrations and promo codes, shared by every worker and process.

Counts live in MongoDB, one document per key (an account at an address, an address, a
customer), and expire by a TTL index once the key has been quiet for a window. A key's
attempts are counted either before the work they guard (``attempt``: of a burst, only as many
as the limit allows go on) or as failures once they fail (``check``, then ``fail``: work in
flight takes none of the allowance). The count that passes the limit blocks the key for a
time that doubles with each block, up to a ceiling; a blocked key is refused with 429 and
Retry-After before any password is hashed.
"""

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, NoReturn

from beanie import Document, Indexed
from pydantic import Field
from pymongo.errors import DuplicateKeyError

from shop.kit.clock import as_utc
from shop.kit.config import AppSettings
from shop.kit.errors import TooManyRequests

MILLISECOND = timedelta(milliseconds=1)
# Outcomes kept per key: more attempts at once than this on one key are refused for a second.
OUTCOMES_KEPT = 32


def _refuse(until: datetime, now: datetime) -> NoReturn:
    wait = max(1, math.ceil((until - now).total_seconds()))
    raise TooManyRequests(f"Too many attempts; try again in {wait} s", retry_after=wait)


def _not_blocked(now: datetime) -> dict[str, object]:
    """Pipeline expression: the key was not blocked when this attempt came."""
    return {"$or": [{"$eq": ["$was_blocked_until", None]}, {"$lte": ["$was_blocked_until", now]}]}


class Attempts(Document):
    """What one key did lately: failed logins of an account, registrations from an address."""

    key: Annotated[str, Indexed(unique=True)]
    attempts: int = 0
    blocked_until: datetime | None = None
    was_blocked_until: datetime | None = None  # as the last attempt found it
    outcomes: list[dict[str, Any]] = Field(default_factory=list)  # the latest attempts' own
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

    async def attempt(self, keys: list[str], now: datetime) -> None:
        """Count one attempt against each key before the work it guards; refuse (429,
        Retry-After) while a key is blocked.

        One update per key counts the attempt, keeps whether the key was blocked before it,
        and, for the attempt that reaches the limit (or the first one after a block ran out),
        blocks the key for the ones after it, longer each time. So of any number of
        attempts at once only those within the limit go on: checking first and counting after
        let a concurrent burst through. Each update records what this attempt found under a
        random id, in a short list of the latest outcomes, and one read of every key finds
        them (``findAndModify`` would answer each in one command, but the embedded server
        runs it through a scan of every key).
        """
        mine = secrets.token_hex(8)
        for key in keys:
            await self._count(key, mine, now)
        found = await Attempts.get_pymongo_collection().find({"key": {"$in": keys}}).to_list()
        until: datetime | None = None
        for key in keys:
            raw: dict[str, Any] = next((k for k in found if k["key"] == key), {})
            outcome = next((o for o in raw.get("outcomes", []) if o["attempt"] == mine), None)
            if outcome is None:  # pushed out by more concurrent attempts than are kept
                blocked: datetime | None = now + timedelta(seconds=1)
            else:
                was = outcome.get("was_blocked_until")
                blocked = None if was is None else as_utc(was)
            if blocked is not None and blocked > now:
                until = blocked if until is None else max(until, blocked)
        if until is not None:
            _refuse(until, now)

    async def _count(self, key: str, attempt: str, now: datetime) -> None:
        """Count ``attempt`` against ``key`` (created by the first one) and record what it
        found."""
        collection = Attempts.get_pymongo_collection()
        counted = self._counted(attempt, now)
        try:
            await collection.update_one({"key": key}, counted, upsert=True)
        except DuplicateKeyError:  # a concurrent first attempt created the key: again
            await collection.update_one({"key": key}, counted)

    def _counted(self, mine: str, now: datetime) -> list[dict[str, Any]]:
        """The update that counts attempt ``mine`` on a key and records what it found."""
        attempts = {"$add": [{"$ifNull": ["$attempts", 0]}, 1]}
        over = {"$subtract": ["$attempts", self.limit]}
        block_ms = {
            "$min": [
                {"$multiply": [self.block / MILLISECOND, {"$pow": [2, over]}]},
                self.longest_block / MILLISECOND,
            ]
        }
        next_block = {"$add": [now, {"$toLong": block_ms}]}
        return [
            {"$set": {"attempts": attempts, "was_blocked_until": "$blocked_until"}},
            {
                "$set": {
                    "blocked_until": {
                        "$cond": [
                            {"$and": [{"$gte": [over, 0]}, _not_blocked(now)]},
                            next_block,
                            "$blocked_until",
                        ]
                    },
                }
            },
            {
                "$set": {
                    "expires_at": {
                        "$max": [now + self.window, {"$ifNull": ["$blocked_until", now]}]
                    },
                    "outcomes": {
                        "$slice": [
                            {
                                "$concatArrays": [
                                    {"$ifNull": ["$outcomes", []]},
                                    [{"attempt": mine, "was_blocked_until": "$was_blocked_until"}],
                                ]
                            },
                            -OUTCOMES_KEPT,
                        ]
                    },
                }
            },
        ]

    async def check(self, key: str, now: datetime) -> None:
        """Refuse (429) while ``key`` is blocked, counting the refused attempt (so the next
        block is longer); otherwise count nothing: the caller counts a failure when it
        happens (``fail``), and work in flight takes none of the allowance."""
        raw = await Attempts.get_pymongo_collection().find_one({"key": key})
        blocked = None if raw is None or raw.get("blocked_until") is None else raw["blocked_until"]
        if blocked is not None and as_utc(blocked) > now:
            await self.fail(key, now)
            _refuse(as_utc(blocked), now)

    async def fail(self, key: str, now: datetime) -> None:
        """Count one failure against ``key``; the one that passes the limit blocks it."""
        await self._count(key, secrets.token_hex(8), now)

    async def give_back(self, key: str) -> None:
        """An attempt that went well does not count against ``key`` (an address, say)."""
        await Attempts.get_pymongo_collection().update_one(
            {"key": key, "attempts": {"$gt": 0}}, {"$inc": {"attempts": -1}}
        )

    async def forget(self, key: str) -> None:
        await Attempts.get_pymongo_collection().delete_one({"key": key})


@dataclass(frozen=True)
class Throttles:
    logins: Throttle  # one account from one address: its failures
    login_addresses: Throttle  # one address, every account: its failures
    registrations: Throttle
    promo_codes: Throttle
    guest_carts: Throttle  # carts started by one address

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
            login_addresses=Throttle(
                limit=settings.login_address_failures_limit,
                block=timedelta(seconds=settings.login_block_seconds),
                longest_block=timedelta(seconds=settings.login_address_window_seconds),
                window=timedelta(seconds=settings.login_address_window_seconds),
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
            guest_carts=Throttle(
                limit=settings.guest_carts_per_address, block=hour, longest_block=hour, window=hour
            ),
        )
