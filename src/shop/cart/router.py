from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from shop.cart.models import Cart, CartItemNotFound, InsufficientStock
from shop.cart.schemas import AddToCart, ApplyCode, CartDiscountOut, CartLineOut, CartOut
from shop.cart.service import FreshCatalog, quote_cart
from shop.catalog.router import ProductNotFound
from shop.deps import Catalog, CurrentUser, Settings
from shop.discounts.models import (
    REFUSALS,
    Discount,
    DiscountInactive,
    DiscountNotFound,
    DiscountScope,
    normalize_code,
)
from shop.errors import responses
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


@router.post("/add/", responses=responses(ProductNotFound, InsufficientStock))
async def add_to_cart(
    body: AddToCart, user: CurrentUser, settings: Settings, catalog: Catalog
) -> CartOut:
    """Add a product, or more of it. The line never exceeds the product's stock."""
    product = (await catalog.products([body.product_id])).get(body.product_id)
    if product is None or not product.active:
        raise ProductNotFound()
    cart = await Cart.add_item(user.id, product, body.quantity)
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


@router.post(
    "/discount/",
    responses=responses(DiscountNotFound, *REFUSALS.values()),
)
async def apply_discount_code(body: ApplyCode, user: CurrentUser, settings: Settings) -> CartOut:
    """Apply a promo code. A cart holds one code: a new one replaces the old.

    The code is judged on the database's figures, not the cart's cache."""
    code = normalize_code(body.code)
    discount = await Discount.find_one(Discount.code == code)
    if discount is None or discount.scope is not DiscountScope.cart:
        raise DiscountNotFound(f"No promo code {code}")
    cart = await Cart.of_user(user.id)
    quote = await quote_cart(cart, settings.currency, FreshCatalog(), code=code)
    if quote.cart_discount is None or not quote.cart_discount.applied:
        reason = quote.cart_discount.reason if quote.cart_discount else None
        raise REFUSALS.get(reason or "", DiscountInactive)()
    cart = await Cart.set_discount_code(user.id, code)
    return cart_out(await quote_cart(cart, settings.currency, FreshCatalog()))


@router.delete("/discount/")
async def remove_discount_code(user: CurrentUser, settings: Settings, catalog: Catalog) -> CartOut:
    """Take the promo code off the cart (a cart without one is left as it is)."""
    cart = await Cart.set_discount_code(user.id, None)
    return cart_out(await quote_cart(cart, settings.currency, catalog))
