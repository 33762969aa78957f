from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.cart.models import Cart
from shop.catalog.models import Product
from shop.clock import utcnow
from shop.discounts.models import Discount, DiscountScope, DiscountUsage
from shop.pricing import PricingContext, Quote, price


async def quote_cart(
    cart: Cart,
    currency: str,
    known: dict[PydanticObjectId, Product] | None = None,
    *,
    code: str | None = None,
    session: AsyncClientSession | None = None,
) -> Quote:
    """Price the cart from the catalog and the discounts as they are now.

    ``known`` products are not read again; ``code`` prices the cart as if it held that code.
    """
    products = dict(known or {})
    if missing := [i.product_id for i in cart.items if i.product_id not in products]:
        products.update(await Product.many(missing, session))
    code = code or cart.discount_code
    candidates: list[dict[str, object]] = [
        {"active": True, "scope": DiscountScope.cart.value, "code": None},
        {
            "active": True,
            "scope": DiscountScope.product.value,
            "product_ids": {"$in": [i.product_id for i in cart.items]},
        },
    ]
    if code is not None:
        candidates.append({"code": code})  # even inactive: the cart says why it does not apply
    discounts = await Discount.find({"$or": candidates}, session=session).to_list()
    limited = [d.id for d in discounts if d.per_user_limit is not None and d.id is not None]
    usage = await DiscountUsage.counts(cart.user_id, limited) if limited else {}
    context = PricingContext(products, discounts, usage, utcnow(), currency)
    return price(cart.items, code, context)
