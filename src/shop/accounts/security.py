"""Password hashing (argon2) and access tokens (JWT)."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache
from typing import TypeVar

import jwt
from beanie import PydanticObjectId
from pwdlib import PasswordHash
from starlette.concurrency import run_in_threadpool

from shop.accounts.models import Role
from shop.kit.clock import utcnow
from shop.kit.errors import Busy, InvalidToken, TokenExpired

T = TypeVar("T")

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()


class PasswordHashing:
    """argon2, off the event loop and bounded: at most ``concurrency`` hashes at once.

    Each hash takes about 64 MiB and a core for tens of milliseconds. Unbounded, a login
    flood ran one per worker thread (2.6 GB) and slowed every other request; now the rest wait
    up to ``wait`` seconds for a slot, then get 503 ``busy`` with Retry-After. Requests that
    need no hashing never wait here.
    """

    def __init__(self, concurrency: int, wait: float = 2.0) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.wait = wait

    async def hash(self, password: str) -> str:
        return await self._run(_hasher.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check a password; with no account (``None``) it costs the same and fails."""
        if password_hash is None:
            await self._run(_hasher.verify, password, _unknown_user_hash())
            return False
        return await self._run(_hasher.verify, password, password_hash)

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait)
        except TimeoutError:
            raise Busy("Too many logins at once; try again in a moment") from None
        try:
            return await run_in_threadpool(work, *args)
        finally:
            self._slots.release()


@cache
def _unknown_user_hash() -> str:
    return _hasher.hash("no such user")


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the access token says. Read from the token; no database round trip."""

    id: PydanticObjectId
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin


def create_access_token(principal: Principal, key: str, minutes: int) -> str:
    now = utcnow()
    claims = {
        "sub": str(principal.id),
        "role": principal.role.value,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def read_access_token(token: str, key: str) -> Principal:
    """The caller a token names, if it is genuine and has not expired.

    A token's signature is checked once per process (the verified claims are kept, a few
    thousand tokens at most); its expiry is checked on every use.
    """
    principal, expires = _verified(token, key)
    if expires <= utcnow().timestamp():
        raise TokenExpired()
    return principal


@lru_cache(maxsize=4096)
def _verified(token: str, key: str) -> tuple[Principal, float]:
    try:
        # Times are judged by the service's clock (``read_access_token``), not PyJWT's.
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError:
        raise InvalidToken() from None
    try:
        principal = Principal(
            id=PydanticObjectId(claims["sub"]), role=Role(str(claims.get("role")))
        )
        return principal, float(claims["exp"])
    except (ValueError, TypeError):
        raise InvalidToken() from None
