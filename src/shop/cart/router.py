from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from shop.cart.models import (
    Cart,
    CartFull,
    CartItemNotFound,
    CartLimits,
    InsufficientStock,
    LineQuantityExceeded,
)
from shop.cart.schemas import AddToCart, ApplyCode, CartDiscountOut, CartLineOut, CartOut
from shop.cart.service import FreshCatalog, quote_cart
from shop.catalog.router import ProductNotFound
from shop.clock import utcnow
from shop.deps import Catalog, CurrentUser, Settings, Throttled
from shop.discounts.models import (
    REFUSALS,
    Discount,
    DiscountMinSubtotalNotMet,
    DiscountNotFound,
    DiscountPerUserLimitReached,
    DiscountRefused,
    DiscountScope,
    normalize_code,
)
from shop.errors import TooManyRequests, responses
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


@router.get("/")
async def view_cart(user: CurrentUser, settings: Settings, catalog: Catalog) -> CartOut:
    """The caller's cart, priced from the catalog now (as of a few seconds at most)."""
    cart = await Cart.of_user(user.id)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


@router.post(
    "/add/",
    responses=responses(ProductNotFound, InsufficientStock, CartFull, LineQuantityExceeded),
)
async def add_to_cart(
    body: AddToCart, user: CurrentUser, settings: Settings, catalog: Catalog
) -> CartOut:
    """Add a product, or more of it. The line never exceeds the product's stock."""
    product = (await catalog.products([body.product_id])).get(body.product_id)
    if product is None or not product.active:
        raise ProductNotFound()
    limits = CartLimits(settings.cart_max_lines, settings.cart_max_line_quantity)
    cart = await Cart.add_item(user.id, product, body.quantity, limits)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


@router.delete("/remove/", responses=responses(CartItemNotFound))
async def remove_from_cart(
    user: CurrentUser,
    settings: Settings,
    catalog: Catalog,
    product_id: PydanticObjectId,
    quantity: Annotated[
        int | None, Query(gt=0, le=10_000, description="Omit to remove the whole line")
    ] = None,
) -> CartOut:
    cart = await Cart.remove_item(user.id, product_id, quantity)
    return cart_out(await quote_cart(cart, settings.currency, catalog))


# Refusals a customer can act on, and so may hear; any other reason a code cannot be used
# now (inactive, not started, expired, used up) is answered as if there were no such code,
# so that guessing cannot tell hidden codes from unknown ones.
ACTIONABLE = (DiscountMinSubtotalNotMet, DiscountPerUserLimitReached)


@router.post(
    "/discount/",
    responses=responses(DiscountNotFound, *ACTIONABLE, TooManyRequests),
)
async def apply_discount_code(
    body: ApplyCode, user: CurrentUser, settings: Settings, throttles: Throttled
) -> CartOut:
    """Apply a promo code. A cart holds one code: a new one replaces the old.

    The code is judged on the database's figures, not the cart's cache. A customer who
    keeps trying codes that cannot be used is refused for a while (429).
    """
    attempts = f"promo-code:{user.id}"
    await throttles.promo_codes.attempt([attempts], utcnow())
    code = normalize_code(body.code)
    refusal: DiscountRefused | DiscountNotFound = DiscountNotFound(f"No promo code {code}")
    discount = await Discount.find_one(Discount.code == code)
    if discount is not None and discount.scope is DiscountScope.cart:
        cart = await Cart.of_user(user.id)
        quote = await quote_cart(cart, settings.currency, FreshCatalog(), code=code)
        if quote.cart_discount is not None and quote.cart_discount.applied:
            await throttles.promo_codes.give_back(attempts)
            cart = await Cart.set_discount_code(user.id, code)
            return cart_out(await quote_cart(cart, settings.currency, FreshCatalog()))
        reason = REFUSALS.get(quote.cart_discount.reason or "") if quote.cart_discount else None
        if reason in ACTIONABLE:
            refusal = reason()
    raise refusal


@router.delete("/discount/")
async def remove_discount_code(user: CurrentUser, settings: Settings, catalog: Catalog) -> CartOut:
    """Take the promo code off the cart (a cart without one is left as it is)."""
    cart = await Cart.set_discount_code(user.id, None)
    return cart_out(await quote_cart(cart, settings.currency, catalog))
