from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.cart.models import Cart
from shop.catalog.models import Product
from shop.pricing import Quote, price_items


async def quote_cart(
    cart: Cart,
    currency: str,
    known: dict[PydanticObjectId, Product] | None = None,
    *,
    session: AsyncClientSession | None = None,
) -> Quote:
    """Price the cart from the catalog as it is now; ``known`` products are not read again."""
    products = dict(known or {})
    missing = [i.product_id for i in cart.items if i.product_id not in products]
    if missing:
        products.update(await Product.many(missing, session))
    return price_items(cart.items, products, currency)
