from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, status

from shop.accounts import service, tokens
from shop.accounts.models import (
    EmailTaken,
    FormExpected,
    InvalidRefreshToken,
    RefreshTokenReused,
    User,
)
from shop.accounts.schemas import LoginForm, RefreshRequest, RegisterRequest, TokenOut, UserOut
from shop.accounts.security import Principal, create_access_token
from shop.deps import ClientAddress, CurrentUser, Hashing, Settings, SigningKey, Throttled
from shop.kit.clock import utcnow
from shop.kit.config import AppSettings
from shop.kit.docs import responses
from shop.kit.errors import Busy, InvalidCredentials, NotFound, TooManyRequests

router = APIRouter(prefix="/auth", tags=["accounts"])


def _out(user: User) -> UserOut:
    assert user.id is not None
    return UserOut(id=user.id, email=user.email, role=user.role)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=responses(EmailTaken, TooManyRequests, Busy),
    summary="Create a customer account",
)
async def register(
    body: RegisterRequest, hashing: Hashing, throttles: Throttled, address: ClientAddress
) -> UserOut:
    """Create a customer account. A client address may register a limited number per hour."""
    return _out(await service.register(body.email, body.password, hashing, throttles, address))


async def _form_body(request: Request) -> None:
    """The OAuth2 password flow posts form fields; a JSON body gets a hint, not 'Field
    required'."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        raise FormExpected(
            "POST /auth/token takes form fields (application/x-www-form-urlencoded): "
            "username=<your email>&password=<your password>"
        )


@router.post(
    "/token",
    dependencies=[Depends(_form_body)],
    responses=responses(InvalidCredentials, FormExpected, TooManyRequests, Busy),
    summary="Log in (email and password as form fields)",
)
async def token(
    form: Annotated[LoginForm, Form()],
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
    now = utcnow()
    user = await service.log_in(form.username, form.password, hashing, throttles, address, now)
    return await _token_pair(
        user, settings, key, await tokens.issue(user, now, _lifetime(settings))
    )


@router.post(
    "/refresh",
    responses=responses(InvalidRefreshToken, RefreshTokenReused),
    summary="Trade a refresh token for new tokens",
)
async def refresh(body: RefreshRequest, settings: Settings, key: SigningKey) -> TokenOut:
    """A new access token and a new refresh token for a refresh token, which is spent.

    A spent refresh token presented again revokes every token of its login (401
    ``refresh_token_reused``): someone copied it. A deleted account, or one whose password
    or role changed since that login, cannot refresh.
    """
    now = utcnow()
    user, next_refresh = await tokens.rotate(body.refresh_token, now, _lifetime(settings))
    return await _token_pair(user, settings, key, next_refresh)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out: revoke the refresh token's login",
)
async def logout(body: RefreshRequest) -> None:
    """End the login the refresh token belongs to: none of its refresh tokens works again.
    Access tokens already issued run out by themselves, within minutes."""
    await tokens.revoke(body.refresh_token)


def _lifetime(settings: AppSettings) -> timedelta:
    return timedelta(days=settings.refresh_token_days)


async def _token_pair(user: User, settings: AppSettings, key: str, refresh_token: str) -> TokenOut:
    assert user.id is not None
    access = create_access_token(
        Principal(id=user.id, role=user.role), key, settings.access_token_minutes
    )
    return TokenOut(
        access_token=access,
        expires_in=settings.access_token_minutes * 60,
        refresh_token=refresh_token,
        refresh_expires_in=int(_lifetime(settings).total_seconds()),
    )


@router.get("/me", responses=responses(NotFound), summary="The account the token belongs to")
async def me(principal: CurrentUser) -> UserOut:
    """The caller's account: id, email and role."""
    user = await User.get(principal.id)
    if user is None:
        raise NotFound("The account no longer exists")
    return _out(user)
