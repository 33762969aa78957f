from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from shop.cart import service
from shop.cart.models import (
    Cart,
    CartFull,
    CartItemNotFound,
    CartLimits,
    InsufficientStock,
    LineQuantityExceeded,
)
from shop.cart.schemas import AddToCart, ApplyCode, CartDiscountOut, CartLineOut, CartOut
from shop.cart.service import quote_cart
from shop.catalog.models import Product, ProductNotFound
from shop.deps import Catalog, CurrentUser, Settings, Throttled
from shop.discounts.models import (
    DiscountMinSubtotalNotMet,
    DiscountNotFound,
    DiscountPerUserLimitReached,
    normalize_code,
)
from shop.docs import responses
from shop.errors import TooManyRequests
from shop.pricing import Quote

router = APIRouter(prefix="/cart", tags=["cart"])


def cart_out(quote: Quote) -> CartOut:
    return CartOut(
        items=[CartLineOut.model_validate(line, from_attributes=True) for line in quote.lines],
        total_quantity=quote.total_quantity,
        subtotal=quote.subtotal,
        cart_discount=CartDiscountOut.model_validate(quote.cart_discount, from_attributes=True)
        if quote.cart_discount
        else None,
        total=quote.total,
        currency=quote.currency,
    )


@router.get("/", summary="See the cart, priced")
async def view_cart(user: CurrentUser, settings: Settings, catalog: Catalog) -> CartOut:
    """The caller's cart, priced from the catalog now (as of a few seconds at most)."""
    cart = await Cart.of_user(user.id)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


@router.post(
    "/add/",
    responses=responses(ProductNotFound, InsufficientStock, CartFull, LineQuantityExceeded),
    summary="Add a product to the cart",
)
async def add_to_cart(
    body: AddToCart, user: CurrentUser, settings: Settings, catalog: Catalog
) -> CartOut:
    """Add a product, or more of it. The line never exceeds the product's stock."""
    found = (await catalog.products([body.product_id])).get(body.product_id)
    product = Product.visible_or_raise(found)
    limits = CartLimits(settings.cart_max_lines, settings.cart_max_line_quantity)
    cart = await Cart.add_item(user.id, product, body.quantity, limits)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


@router.delete(
    "/remove/",
    responses=responses(CartItemNotFound),
    summary="Remove units or a whole line from the cart",
)
async def remove_from_cart(
    user: CurrentUser,
    settings: Settings,
    catalog: Catalog,
    product_id: PydanticObjectId,
    quantity: Annotated[
        int | None, Query(gt=0, le=10_000, description="Omit to remove the whole line")
    ] = None,
) -> CartOut:
    """Takes `quantity` units off the line, or the whole line when `quantity` is omitted."""
    cart = await Cart.remove_item(user.id, product_id, quantity)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


@router.post(
    "/discount/",
    responses=responses(
        DiscountNotFound, DiscountMinSubtotalNotMet, DiscountPerUserLimitReached, TooManyRequests
    ),
    summary="Apply a promo code",
)
async def apply_discount_code(
    body: ApplyCode, user: CurrentUser, settings: Settings, throttles: Throttled
) -> CartOut:
    """Apply a promo code. A cart holds one code: a new one replaces the old.

    A code that cannot be used now answers 404 like an unknown one, unless the reason is
    one the customer can act on. A customer who keeps trying codes that cannot be used is
    refused for a while (429).
    """
    code = normalize_code(body.code)
    quote = await service.apply_code(user.id, code, settings.currency, throttles.promo_codes)
    return cart_out(quote)


@router.delete("/discount/", summary="Remove the promo code")
async def remove_discount_code(user: CurrentUser, settings: Settings, catalog: Catalog) -> CartOut:
    """Take the promo code off the cart (a cart without one is left as it is)."""
    cart = await Cart.set_discount_code(user.id, None)
    return cart_out(await quote_cart(cart, settings.currency, catalog))
