"""Request dependencies, as ``Annotated`` aliases the routers declare.

Every dependency here does no I/O and is ``async def``: FastAPI runs a plain ``def``
dependency in a worker thread, a hand-off that cost more than the work itself.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from shop.accounts.security import PasswordHashing, Principal, read_access_token
from shop.accounts.throttle import Throttles
from shop.cart.models import CartOwner
from shop.catalog_cache import CatalogCache
from shop.kit.config import AppSettings
from shop.kit.errors import Forbidden, NotAuthenticated
from shop.kit.observability import identify_user
from shop.payments.provider import PaymentProvider

# For routes that serve anyone and show more to a logged-in admin: the token is optional.
OPTIONAL_TOKEN: dict[str, Any] = {"security": [{}]}


def _app_state(name: str) -> Any:
    """A dependency on what the composition root keeps in ``app.state`` under ``name``."""

    async def read(request: Request) -> Any:
        return getattr(request.app.state, name)

    read.__name__ = f"app_state_{name}"
    return Depends(read)


Settings = Annotated[AppSettings, _app_state("settings")]
SigningKey = Annotated[str, _app_state("signing_key")]
Catalog = Annotated[CatalogCache, _app_state("catalog")]
PaymentProviders = Annotated[Mapping[str, PaymentProvider], _app_state("payment_providers")]
Hashing = Annotated[PasswordHashing, _app_state("hashing")]
Throttled = Annotated[Throttles, _app_state("throttles")]


def _address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _client_address(request: Request) -> str:
    return _address_of(request)


ClientAddress = Annotated[str, Depends(_client_address)]


CART_TOKEN = "X-Cart-Token"
CART_TOKEN_DOC = (
    "A guest's cart (no Authorization): the token the first guest `POST /cart/add/` answered "
    "in its X-Cart-Token header. Ignored when a bearer token is sent: the customer's own "
    "cart wins."
)
# The shape every cart token has: 43 URL-safe characters.
CART_TOKEN_EXAMPLE = "Yq0Vt3kR8mZ1pL6sN4wC9xB2hJ7dF5gA0eU3iO8rT1y"


class _Bearer(OAuth2PasswordBearer):
    """The caller the bearer token names, read in one dependency (each nested dependency
    FastAPI resolves costs more than reading the header). ``required`` refuses a request
    without a token; otherwise it is anonymous (``None``)."""

    def __init__(self, *, required: bool) -> None:
        super().__init__(
            tokenUrl="/auth/token",
            scheme_name="OAuth2PasswordBearer",  # one scheme in the OpenAPI document
            auto_error=False,
            description="Log in with your email as the username and your password.",
        )
        self.required = required

    async def __call__(self, request: Request) -> Principal | None:  # type: ignore[override]
        token = await super().__call__(request)
        if token is None:
            if self.required and CART_TOKEN in request.headers:
                raise NotAuthenticated(
                    "An account is required: log in, then POST /cart/merge/ with your "
                    f"{CART_TOKEN} to bring the guest cart along"
                )
            if self.required:
                raise NotAuthenticated("A bearer token is required")
            return None
        principal = read_access_token(token, request.app.state.signing_key)
        identify_user(principal.id)
        return principal


OptionalUser = Annotated[Principal | None, Depends(_Bearer(required=False))]
CurrentUser = Annotated[Principal, Depends(_Bearer(required=True))]


# What every cart route declares: the bearer token is optional, and a guest's cart is named
# by X-Cart-Token, which ``Shopper`` reads itself (a header parameter that FastAPI resolved
# cost the request more than reading it).
CART_ROUTE: dict[str, Any] = {
    **OPTIONAL_TOKEN,
    "parameters": [
        {
            "name": CART_TOKEN,
            "in": "header",
            "required": False,
            "description": CART_TOKEN_DOC,
            "schema": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "description": CART_TOKEN_DOC,
                "examples": [CART_TOKEN_EXAMPLE],
                "title": CART_TOKEN,
            },
        }
    ],
}


@dataclass(frozen=True, slots=True)
class CartRequest:
    """What a cart route needs, resolved as one dependency (FastAPI's resolution of each
    dependency cost a cart view about a tenth of its CPU): whose cart, and the app's
    settings, catalog cache, throttles and the client's address."""

    owner: CartOwner | None  # None: a visitor with no cart yet
    settings: AppSettings
    catalog: CatalogCache
    throttles: Throttles
    address: str


class _CartRequest(_Bearer):
    """Whose cart: the customer's when a bearer token is sent (``X-Cart-Token`` is then
    ignored), else the guest's that ``X-Cart-Token`` names, else nobody's yet. Its routes
    declare ``CART_ROUTE``."""

    def __init__(self) -> None:
        super().__init__(required=False)

    async def __call__(self, request: Request) -> CartRequest:  # type: ignore[override]
        state = request.app.state
        user = await super().__call__(request)
        owner = None
        if user is not None:
            owner = CartOwner.customer(user.id)
        elif (token := request.headers.get(CART_TOKEN)) is not None:
            owner = CartOwner.guest_with(token, timedelta(days=state.settings.guest_cart_days))
        return CartRequest(
            owner, state.settings, state.catalog, state.throttles, _address_of(request)
        )


Shopper = Annotated[CartRequest, Depends(_CartRequest())]


async def _admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("Only administrators may do this")
    return user


AdminUser = Annotated[Principal, Depends(_admin_user)]
