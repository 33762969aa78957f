from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from shop.cart.models import Cart, CartItemNotFound, InsufficientStock
from shop.cart.schemas import AddToCart, CartLineOut, CartOut
from shop.cart.service import quote_cart
from shop.catalog.models import Product
from shop.catalog.router import ProductNotFound
from shop.deps import CurrentUser, Settings
from shop.errors import responses
from shop.pricing import Quote

router = APIRouter(prefix="/cart", tags=["cart"])


def cart_out(quote: Quote) -> CartOut:
    return CartOut(
        items=[CartLineOut.model_validate(line, from_attributes=True) for line in quote.lines],
        total_quantity=quote.total_quantity,
        subtotal=quote.subtotal,
        total=quote.total,
        currency=quote.currency,
    )


@router.get("/")
async def view_cart(user: CurrentUser, settings: Settings) -> CartOut:
    """The caller's cart, priced from the catalog now."""
    cart = await Cart.of_user(user.id)
    return cart_out(await quote_cart(cart, settings.currency))


@router.post("/add/", responses=responses(ProductNotFound, InsufficientStock))
async def add_to_cart(body: AddToCart, user: CurrentUser, settings: Settings) -> CartOut:
    """Add a product, or more of it. The line never exceeds the product's stock."""
    product = await Product.get(body.product_id)
    if product is None or not product.active:
        raise ProductNotFound()
    cart = await Cart.add_item(user.id, product, body.quantity)
    return cart_out(await quote_cart(cart, settings.currency, {body.product_id: product}))


@router.delete("/remove/", responses=responses(CartItemNotFound))
async def remove_from_cart(
    user: CurrentUser,
    settings: Settings,
    product_id: PydanticObjectId,
    quantity: Annotated[
        int | None, Query(gt=0, le=10_000, description="Omit to remove the whole line")
    ] = None,
) -> CartOut:
    cart = await Cart.remove_item(user.id, product_id, quantity)
    return cart_out(await quote_cart(cart, settings.currency))
