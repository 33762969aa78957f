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
from shop.kit.clock import as_utc


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

    The next token is stored first, then ``token`` is spent by an update conditional on its
    being unspent: of concurrent refreshes with one token exactly one spends it, and every
    other is a reuse, which revokes the whole family, the winner's next token included
    (it was stored before the winner spent, so before any reuse could be seen). Every
    command is addressed by the unique token hash.
    """
    known = await RefreshToken.find_one({"token_hash": _hash(token)})
    if known is None:
        raise InvalidRefreshToken()
    if known.used_at is not None:
        await revoke_family(known.family)
        raise RefreshTokenReused()
    if known.revoked or as_utc(known.expires_at) <= now:
        raise InvalidRefreshToken()
    user = await User.get(known.user_id)
    if user is None or user.credentials_version != known.credentials_version:
        await revoke_family(known.family)
        raise InvalidRefreshToken("The account changed since this login; log in again")
    following = await issue(user, now, lifetime, known.family)
    collection = RefreshToken.get_pymongo_collection()
    spent = await collection.update_one(
        {"token_hash": known.token_hash, "used_at": None, "revoked": False},
        {"$set": {"used_at": now}},
    )
    if spent.matched_count == 0:  # spent (or revoked) by a concurrent request meanwhile
        await collection.delete_one({"token_hash": _hash(following)})
        await revoke_family(known.family)
        raise RefreshTokenReused()
    return user, following


async def revoke(token: str) -> None:
    """Logout: the token's whole family stops working (an unknown token changes nothing)."""
    known = await RefreshToken.find_one({"token_hash": _hash(token)})
    if known is not None:
        await revoke_family(known.family)


async def revoke_family(family: str) -> None:
    await RefreshToken.get_pymongo_collection().update_many(
        {"family": family}, {"$set": {"revoked": True}}
    )
