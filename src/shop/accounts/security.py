"""Password hashing (argon2) and access tokens (JWT)."""

from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache

import jwt
from beanie import PydanticObjectId
from pwdlib import PasswordHash
from starlette.concurrency import run_in_threadpool

from shop.accounts.models import Role
from shop.clock import utcnow
from shop.errors import InvalidToken, TokenExpired

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()


async def hash_password(password: str) -> str:
    # argon2 is deliberately slow; keep it off the event loop.
    return await run_in_threadpool(_hasher.hash, password)


@cache
def _unknown_user_hash() -> str:
    return _hasher.hash("no such user")


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password; with no account (``None``) it costs the same and fails."""
    if password_hash is None:
        await run_in_threadpool(_hasher.verify, password, _unknown_user_hash())
        return False
    return await run_in_threadpool(_hasher.verify, password, password_hash)


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
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise TokenExpired() from None
    except jwt.InvalidTokenError:
        raise InvalidToken() from None
    try:
        principal = Principal(
            id=PydanticObjectId(claims["sub"]), role=Role(str(claims.get("role")))
        )
        return principal, float(claims["exp"])
    except (ValueError, TypeError):
        raise InvalidToken() from None
