"""Refresh tokens: long-lived, stored only as hashes, rotated on every use.

A login starts a family. Each refresh spends its token and issues the next one of the same
family. A spent token presented again means it was copied, by the client's attacker or
the client itself: the whole family is revoked, so whoever holds its live token must log in
again. Logout revokes the family. A user who is gone, or whose password or role changed
since the login (``User.credentials_version``), cannot refresh. Access tokens stay
stateless (no round trip) and short-lived.
"""

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Annotated, ClassVar

from beanie import Document, Indexed, PydanticObjectId
from pymongo import ASCENDING, IndexModel

from shop.accounts.models import InvalidRefreshToken, RefreshTokenReused, User
from shop.clock import as_utc


class RefreshToken(Document):
    token_hash: Annotated[str, Indexed(unique=True)]
    user_id: PydanticObjectId
    family: str
    credentials_version: int
    used_at: datetime | None = None
    revoked: bool = False
    expires_at: Annotated[datetime, Indexed(expireAfterSeconds=0)]

    class Settings:
        name = "refresh_tokens"
        indexes: ClassVar = [IndexModel([("family", ASCENDING)])]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue(user: User, now: datetime, lifetime: timedelta, family: str | None = None) -> str:
    """A new refresh token for ``user``: of a new family (a login), or of ``family``."""
    assert user.id is not None
    token = secrets.token_urlsafe(32)
    await RefreshToken(
        token_hash=_hash(token),
        user_id=user.id,
        family=family or secrets.token_hex(16),
        credentials_version=user.credentials_version,
        expires_at=now + lifetime,
    ).insert()
    return token


async def rotate(token: str, now: datetime, lifetime: timedelta) -> tuple[User, str]:
    """Spend ``token``: its user and the family's next token, or refuse (401).

    The token is read, then spent by an update conditional on its still being unspent, so
    of two concurrent refreshes with one token exactly one gets through; the other is a
    reuse. Both commands are addressed by the unique token hash.
    """
    collection = RefreshToken.get_pymongo_collection()
    known = await RefreshToken.find_one({"token_hash": _hash(token)})
    if known is None:
        raise InvalidRefreshToken()
    if known.used_at is None and not known.revoked and as_utc(known.expires_at) > now:
        spent = await collection.update_one(
            {"token_hash": known.token_hash, "used_at": None, "revoked": False},
            {"$set": {"used_at": now}},
        )
        if spent.matched_count == 0:  # a concurrent refresh spent it first
            known.used_at = now
    elif known.used_at is None:
        raise InvalidRefreshToken()  # revoked or expired
    if known.used_at is not None:
        await revoke_family(known.family)
        raise RefreshTokenReused()
    user = await User.get(known.user_id)
    if user is None or user.credentials_version != known.credentials_version:
        await revoke_family(known.family)
        raise InvalidRefreshToken("The account changed since this login; log in again")
    return user, await issue(user, now, lifetime, known.family)


async def revoke(token: str) -> None:
    """Logout: the token's whole family stops working (an unknown token changes nothing)."""
    known = await RefreshToken.find_one({"token_hash": _hash(token)})
    if known is not None:
        await revoke_family(known.family)


async def revoke_family(family: str) -> None:
    await RefreshToken.get_pymongo_collection().update_many(
        {"family": family}, {"$set": {"revoked": True}}
    )
