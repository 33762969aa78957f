from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm
from pymongo.errors import DuplicateKeyError

from shop.accounts.models import User
from shop.accounts.schemas import RegisterRequest, TokenOut, UserOut
from shop.accounts.security import Principal, create_access_token
from shop.clock import utcnow
from shop.deps import ClientAddress, CurrentUser, Hashing, Settings, SigningKey, Throttled
from shop.errors import Busy, Conflict, InvalidCredentials, NotFound, TooManyRequests, responses

router = APIRouter(prefix="/auth", tags=["accounts"])


class EmailTaken(Conflict):
    code, title = "email_taken", "Email already registered"


def _out(user: User) -> UserOut:
    assert user.id is not None
    return UserOut(id=user.id, email=user.email, role=user.role)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=responses(EmailTaken, TooManyRequests, Busy),
)
async def register(
    body: RegisterRequest, hashing: Hashing, throttles: Throttled, address: ClientAddress
) -> UserOut:
    """Create a customer account. A client address may register a limited number per hour."""
    now, per_address = utcnow(), [f"register:{address}"]
    await throttles.registrations.check(per_address, now)
    await throttles.registrations.count(per_address, now)
    user = User(email=body.email.lower(), password_hash=await hashing.hash(body.password))
    try:
        await user.insert()
    except DuplicateKeyError:
        raise EmailTaken(f"{user.email} is already registered") from None
    return _out(user)


@router.post("/token", responses=responses(InvalidCredentials, TooManyRequests, Busy))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    settings: Settings,
    key: SigningKey,
    hashing: Hashing,
    throttles: Throttled,
    address: ClientAddress,
) -> TokenOut:
    """OAuth2 password flow: ``username`` is the email.

    Repeated failures for one account or from one address are refused for a while (429),
    before any password is checked; a success resets the account's count.
    """
    email, now = form.username.lower(), utcnow()
    keys = [f"login:{email}", f"login-from:{address}"]
    await throttles.logins.check(keys, now)
    user = await User.find_one(User.email == email)
    valid = await hashing.verify(form.password, user.password_hash if user else None)
    if user is None or not valid:
        await throttles.logins.count(keys, now)
        raise InvalidCredentials()
    await throttles.logins.forget(keys[0])
    assert user.id is not None
    access = create_access_token(
        Principal(id=user.id, role=user.role), key, settings.access_token_minutes
    )
    return TokenOut(access_token=access, expires_in=settings.access_token_minutes * 60)


@router.get("/me", responses=responses(NotFound))
async def me(principal: CurrentUser) -> UserOut:
    user = await User.get(principal.id)
    if user is None:
        raise NotFound("The account no longer exists")
    return _out(user)
