from datetime import timedelta
from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Header, Query, Response

from shop.cart import service
from shop.cart.answers import priced_cart
from shop.cart.models import (
    Cart,
    CartFull,
    CartItemNotFound,
    CartLimits,
    CartNotFound,
    CartOwner,
    InsufficientStock,
    LineQuantityExceeded,
)
from shop.cart.schemas import (
    AddToCart,
    ApplyCode,
    CartOut,
    MergedLineOut,
    MergeOut,
    cart_out,
)
from shop.cart.service import quote_cart
from shop.catalog.models import Product, ProductNotFound
from shop.deps import (
    CART_ROUTE,
    CART_TOKEN,
    CART_TOKEN_EXAMPLE,
    CartRequest,
    Catalog,
    CurrentUser,
    Settings,
    Shopper,
)
from shop.discounts.models import (
    DiscountMinSubtotalNotMet,
    DiscountNotFound,
    DiscountPerUserLimitReached,
    normalize_code,
)
from shop.kit.clock import utcnow
from shop.kit.docs import responses
from shop.kit.errors import TooManyRequests

router = APIRouter(prefix="/cart", tags=["cart"])


def _owner(shopper: CartRequest) -> CartOwner:
    """The cart a request changes: a visitor with no cart yet has none to change."""
    if shopper.owner is None:
        raise CartNotFound(f"No cart yet: add a product first, or log in ({CART_TOKEN} missing)")
    return shopper.owner


@router.get(
    "/",
    openapi_extra=CART_ROUTE,
    response_model=CartOut,
    responses=responses(CartNotFound),
    summary="See the cart, priced",
)
async def view_cart(shopper: Shopper) -> Response:
    """The caller's cart, priced from the catalog now (as of a few seconds at most).

    A visitor with neither a bearer token nor an X-Cart-Token sees an empty cart (a
    storefront's first page asks before anything was added); an unknown or expired cart
    token is 404 `cart_not_found`."""
    currency = shopper.settings.currency
    if shopper.owner is None:
        quote = await quote_cart(Cart(), currency, shopper.catalog)
        body = cart_out(quote).model_dump_json().encode()
    else:  # often the bytes it answered last: see shop.cart.answers
        body = await priced_cart(shopper.owner, currency, shopper.catalog)
    return Response(body, media_type="application/json")


@router.post(
    "/add/",
    openapi_extra=CART_ROUTE,
    responses={
        200: {
            "description": "The cart, priced. A guest's first add starts a cart: its token is "
            "in the X-Cart-Token header, to send with every later cart request",
            "headers": {
                CART_TOKEN: {
                    "description": "Set when this add started a guest's cart",
                    "schema": {"type": "string"},
                }
            },
        },
        **responses(
            ProductNotFound,
            InsufficientStock,
            CartFull,
            LineQuantityExceeded,
            CartNotFound,
            TooManyRequests,
        ),
    },
    summary="Add a product to the cart",
)
async def add_to_cart(body: AddToCart, shopper: Shopper, response: Response) -> CartOut:
    """Add a product, or more of it. The line never exceeds the product's stock.

    Without an account: the first add (no X-Cart-Token) starts a guest cart and answers its
    token in the X-Cart-Token header; later requests send it. A guest cart lives
    `SHOP_GUEST_CART_DAYS` after its last change; checkout needs an account
    (`POST /cart/merge/`). One address may start a limited number of guest carts an hour."""
    settings, catalog = shopper.settings, shopper.catalog
    found = (await catalog.products([body.product_id])).get(body.product_id)
    product = Product.visible_or_raise(found)
    limits = CartLimits(settings.cart_max_lines, settings.cart_max_line_quantity)
    owner = shopper.owner
    if owner is None:
        await shopper.throttles.guest_carts.attempt([f"guest-cart:{shopper.address}"], utcnow())
        owner, token = CartOwner.new_guest(timedelta(days=settings.guest_cart_days))
        await Cart.open_for_guest(owner)
        response.headers[CART_TOKEN] = token
    cart = await Cart.add_item(owner, product, body.quantity, limits)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


@router.delete(
    "/remove/",
    openapi_extra=CART_ROUTE,
    responses=responses(CartItemNotFound, CartNotFound),
    summary="Remove units or a whole line from the cart",
)
async def remove_from_cart(
    shopper: Shopper,
    product_id: PydanticObjectId,
    quantity: Annotated[
        int | None, Query(gt=0, le=10_000, description="Omit to remove the whole line")
    ] = None,
) -> CartOut:
    """Takes `quantity` units off the line, or the whole line when `quantity` is omitted."""
    cart = await Cart.remove_item(_owner(shopper), product_id, quantity)
    return cart_out(await quote_cart(cart, shopper.settings.currency, shopper.catalog))


@router.post(
    "/discount/",
    openapi_extra=CART_ROUTE,
    responses=responses(
        DiscountNotFound,
        DiscountMinSubtotalNotMet,
        DiscountPerUserLimitReached,
        TooManyRequests,
        CartNotFound,
    ),
    summary="Apply a promo code",
)
async def apply_discount_code(body: ApplyCode, shopper: Shopper) -> CartOut:
    """Apply a promo code. A cart holds one code: a new one replaces the old.

    A code that cannot be used now answers 404 like an unknown one, unless the reason is
    one the customer can act on. A customer who keeps trying codes that cannot be used is
    refused for a while (429).
    """
    code = normalize_code(body.code)
    quote = await service.apply_code(
        _owner(shopper), code, shopper.settings.currency, shopper.throttles.promo_codes
    )
    return cart_out(quote)


@router.delete(
    "/discount/",
    openapi_extra=CART_ROUTE,
    responses=responses(CartNotFound),
    summary="Remove the promo code",
)
async def remove_discount_code(shopper: Shopper) -> CartOut:
    """Take the promo code off the cart (a cart without one is left as it is)."""
    cart = await Cart.set_discount_code(_owner(shopper), None)
    return cart_out(await quote_cart(cart, shopper.settings.currency, shopper.catalog))


@router.post(
    "/merge/",
    responses=responses(CartNotFound),
    summary="Bring a guest's cart into your own",
)
async def merge_guest_cart(
    user: CurrentUser,
    settings: Settings,
    catalog: Catalog,
    x_cart_token: Annotated[
        str,
        Header(
            alias=CART_TOKEN,
            description="The guest cart's token",
            examples=[CART_TOKEN_EXAMPLE],
        ),
    ],
) -> MergeOut:
    """After signing up or logging in: the guest cart's lines join the customer's cart, and
    the guest cart ends (its token then answers 404).

    Quantities of the same product add up. A line that would pass the product's stock or
    the cart's limits is capped (`capped`), or left out when nothing of it fits
    (`left_out`), each with the reason. The guest's promo code comes along when the
    customer's cart has none. Merging the same token twice counts nothing twice."""
    guest = CartOwner.guest_with(x_cart_token, timedelta(days=settings.guest_cart_days))
    limits = CartLimits(settings.cart_max_lines, settings.cart_max_line_quantity)
    merged = await service.merge_guest_cart(user.id, guest, catalog, limits)
    out = cart_out(await quote_cart(merged.cart, settings.currency, catalog))
    return MergeOut(
        **out.model_dump(),
        capped=[MergedLineOut.model_validate(m, from_attributes=True) for m in merged.capped],
        left_out=[MergedLineOut.model_validate(m, from_attributes=True) for m in merged.left_out],
    )
