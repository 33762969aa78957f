"""Account use cases: registering, logging in, and the configured admin."""

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from shop.accounts.models import EmailTaken, Role, User, normalize_email
from shop.accounts.security import PasswordHashing
from shop.accounts.throttle import Throttles
from shop.kit.clock import utcnow
from shop.kit.errors import InvalidCredentials


async def register(
    email: str, password: str, hashing: PasswordHashing, throttles: Throttles, address: str
) -> User:
    """A new customer account. A client address may register a limited number per hour."""
    await throttles.registrations.attempt([f"register:{address}"], utcnow())
    user = User(email=normalize_email(email), password_hash=await hashing.hash(password))
    try:
        await user.insert()
    except DuplicateKeyError:
        raise EmailTaken(f"{user.email} is already registered") from None
    return user


async def log_in(
    email: str,
    password: str,
    hashing: PasswordHashing,
    throttles: Throttles,
    address: str,
    now: datetime,
) -> User:
    """The account these credentials open, or ``InvalidCredentials``.

    Failures are throttled, not customers (as Auth0's brute-force protection and
    suspicious-IP throttling do): an account is refused (429) only from the address its
    failures came from, so an attacker elsewhere never locks its owner out; and an address
    is refused once its failures across all accounts pass a larger allowance, which stops a
    password sprayed over many accounts. Attempts at one account from one address are counted
    before the password is checked, so of a burst only the allowed number are checked; a
    correct password clears them and never counts against the address. How many logins run
    at once is bounded by the hashing limit (503 ``busy``), not here.
    """
    email = normalize_email(email)
    pair, origin = f"login:{email}|{address}", f"login-from:{address}"
    await throttles.login_addresses.check(origin, now)
    await throttles.logins.attempt([pair], now)
    user = await User.find_one(User.email == email)
    valid = await hashing.verify(password, user.password_hash if user else None)
    if user is None or not valid:
        await throttles.login_addresses.fail(origin, now)
        raise InvalidCredentials()
    await throttles.logins.forget(pair)
    return user


async def ensure_admin(email: str, password: str, hashing: PasswordHashing) -> None:
    """The configured admin account exists, with the configured password.

    Unchanged, it is left alone; a new password or role ends the sessions of earlier logins.
    """
    email = normalize_email(email)
    current = await User.find_one(User.email == email)
    if (
        current is not None
        and current.role is Role.admin
        and await hashing.verify(password, current.password_hash)
    ):
        return
    await User.get_pymongo_collection().update_one(
        {"email": email},
        {
            "$set": {"password_hash": await hashing.hash(password), "role": Role.admin.value},
            "$inc": {"credentials_version": 1},
            "$setOnInsert": {"created_at": utcnow()},
        },
        upsert=True,
    )
