"""Request dependencies, as ``Annotated`` aliases the routers declare.

Every dependency here does no I/O and is ``async def``: FastAPI runs a plain ``def``
dependency in a worker thread, a hand-off that cost more than the work itself.
"""

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from shop.accounts.security import PasswordHashing, Principal, read_access_token
from shop.accounts.throttle import Throttles
from shop.catalog_cache import CatalogCache
from shop.config import AppSettings
from shop.errors import Forbidden, NotAuthenticated
from shop.payments.provider import PaymentProvider

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


async def _settings(request: Request) -> AppSettings:
    settings: AppSettings = request.app.state.settings
    return settings


Settings = Annotated[AppSettings, Depends(_settings)]


async def _signing_key(request: Request) -> str:
    key: str = request.app.state.signing_key
    return key


SigningKey = Annotated[str, Depends(_signing_key)]


async def _catalog(request: Request) -> CatalogCache:
    catalog: CatalogCache = request.app.state.catalog
    return catalog


Catalog = Annotated[CatalogCache, Depends(_catalog)]


async def _providers(request: Request) -> Mapping[str, PaymentProvider]:
    providers: Mapping[str, PaymentProvider] = request.app.state.payment_providers
    return providers


PaymentProviders = Annotated[Mapping[str, PaymentProvider], Depends(_providers)]


async def _hashing(request: Request) -> PasswordHashing:
    hashing: PasswordHashing = request.app.state.hashing
    return hashing


Hashing = Annotated[PasswordHashing, Depends(_hashing)]


async def _throttles(request: Request) -> Throttles:
    throttles: Throttles = request.app.state.throttles
    return throttles


Throttled = Annotated[Throttles, Depends(_throttles)]


async def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(_client_address)]


async def _optional_user(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> Principal | None:
    return None if token is None else read_access_token(token, request.app.state.signing_key)


async def _current_user(
    user: Annotated[Principal | None, Depends(_optional_user)],
) -> Principal:
    if user is None:
        raise NotAuthenticated("A bearer token is required")
    return user


async def _admin_user(user: Annotated[Principal, Depends(_current_user)]) -> Principal:
    if not user.is_admin:
        raise Forbidden("Only administrators may do this")
    return user


OptionalUser = Annotated[Principal | None, Depends(_optional_user)]
CurrentUser = Annotated[Principal, Depends(_current_user)]
AdminUser = Annotated[Principal, Depends(_admin_user)]
