from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm
from pymongo.errors import DuplicateKeyError

from shop.accounts.models import User
from shop.accounts.schemas import RegisterRequest, TokenOut, UserOut
from shop.accounts.security import (
    Principal,
    create_access_token,
    hash_password,
    verify_password,
)
from shop.deps import CurrentUser, Settings, SigningKey
from shop.errors import Conflict, InvalidCredentials, NotFound, responses

router = APIRouter(prefix="/auth", tags=["accounts"])


class EmailTaken(Conflict):
    code, title = "email_taken", "Email already registered"


def _out(user: User) -> UserOut:
    assert user.id is not None
    return UserOut(id=user.id, email=user.email, role=user.role)


@router.post("/register", status_code=status.HTTP_201_CREATED, responses=responses(EmailTaken))
async def register(body: RegisterRequest) -> UserOut:
    user = User(email=body.email.lower(), password_hash=await hash_password(body.password))
    try:
        await user.insert()
    except DuplicateKeyError:
        raise EmailTaken(f"{user.email} is already registered") from None
    return _out(user)


@router.post("/token", responses=responses(InvalidCredentials))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], settings: Settings, key: SigningKey
) -> TokenOut:
    """OAuth2 password flow: ``username`` is the email."""
    user = await User.find_one(User.email == form.username.lower())
    valid = await verify_password(form.password, user.password_hash if user else None)
    if user is None or not valid:
        raise InvalidCredentials()
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
