from collections.abc import Iterable
from typing import Protocol

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.accounts.throttle import Throttle
from shop.cart.models import Cart
from shop.catalog.models import Product
from shop.clock import utcnow
from shop.discounts.models import Discount, DiscountNotFound, DiscountScope, DiscountUsage
from shop.pricing import PricingContext, Quote, price


class CatalogReader(Protocol):
    """Where a quote reads products and discounts: the cart's cache, or the database."""

    async def products(
        self, ids: Iterable[PydanticObjectId]
    ) -> dict[PydanticObjectId, Product]: ...

    async def discounts(
        self, product_ids: Iterable[PydanticObjectId], code: str | None
    ) -> list[Discount]: ...


class FreshCatalog:
    """The catalog and discounts as the database has them now (inside ``session``'s
    transaction when given): what checkout prices with."""

    def __init__(self, session: AsyncClientSession | None = None) -> None:
        self.session = session

    async def products(self, ids: Iterable[PydanticObjectId]) -> dict[PydanticObjectId, Product]:
        return await Product.many(list(ids), self.session)

    async def discounts(
        self, product_ids: Iterable[PydanticObjectId], code: str | None
    ) -> list[Discount]:
        candidates: list[dict[str, object]] = [
            {"active": True, "scope": DiscountScope.cart.value, "code": None},
            {
                "active": True,
                "scope": DiscountScope.product.value,
                "product_ids": {"$in": list(product_ids)},
            },
        ]
        if code is not None:
            candidates.append({"code": code})  # even inactive: the cart says why it does not apply
        return await Discount.find({"$or": candidates}, session=self.session).to_list()


class RememberingCatalog(FreshCatalog):
    """The database's catalog, read once: a second quote of the same cart (after a change
    to it) reads only what the first did not."""

    def __init__(self, session: AsyncClientSession | None = None) -> None:
        super().__init__(session)
        self._products: dict[PydanticObjectId, Product] = {}
        self._discounts: dict[tuple[frozenset[PydanticObjectId], str | None], list[Discount]] = {}

    async def products(self, ids: Iterable[PydanticObjectId]) -> dict[PydanticObjectId, Product]:
        wanted = list(ids)
        if missing := [i for i in wanted if i not in self._products]:
            self._products |= await super().products(missing)
        return {i: self._products[i] for i in wanted if i in self._products}

    async def discounts(
        self, product_ids: Iterable[PydanticObjectId], code: str | None
    ) -> list[Discount]:
        key = (frozenset(product_ids), code)
        if key not in self._discounts:
            self._discounts[key] = await super().discounts(key[0], code)
        return self._discounts[key]


async def quote_cart(
    cart: Cart,
    currency: str,
    catalog: CatalogReader,
    *,
    code: str | None = None,
    session: AsyncClientSession | None = None,
) -> Quote:
    """Price the cart from the catalog and the discounts ``catalog`` reads.

    ``code`` prices the cart as if it held that code. A customer's redemptions are read only
    when a discount that may apply limits them per customer.
    """
    product_ids = [i.product_id for i in cart.items]
    code = code or cart.discount_code
    products = await catalog.products(product_ids)
    discounts = await catalog.discounts(product_ids, code)
    limited = [d.id for d in discounts if d.per_user_limit is not None and d.id is not None]
    usage = await DiscountUsage.counts(cart.user_id, limited, session) if limited else {}
    context = PricingContext(products, discounts, usage, utcnow(), currency)
    return price(cart.items, code, context)


async def apply_code(
    user_id: PydanticObjectId, code: str, currency: str, throttle: Throttle
) -> Quote:
    """Put a promo code on the cart, if it applies to it now; a new one replaces the old.

    The code is judged on the database's figures, not the cache's. A code that cannot be
    used is refused as unknown (404) unless the customer can act on the reason (a minimum
    subtotal, their own uses); a customer who keeps trying codes that cannot be used is
    refused for a while (429).
    """
    attempts = f"promo-code:{user_id}"
    await throttle.attempt([attempts], utcnow())
    cart = await Cart.of_user(user_id)
    catalog = RememberingCatalog()
    quote = await quote_cart(cart, currency, catalog, code=code)
    refusal = quote.cart_discount.refusal if quote.cart_discount else None
    if refusal is not None:
        if isinstance(refusal, DiscountNotFound) or not refusal.actionable:
            raise DiscountNotFound(f"No promo code {code}")
        raise refusal
    await throttle.give_back(attempts)
    cart = await Cart.set_discount_code(user_id, code)
    return await quote_cart(cart, currency, catalog)
