from collections.abc import Iterable
from typing import NamedTuple, Protocol

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.accounts.throttle import Throttle
from shop.cart.models import (
    Cart,
    CartFull,
    CartLimits,
    CartOwner,
    InsufficientStock,
    LineQuantityExceeded,
)
from shop.catalog.models import Product
from shop.discounts.models import Discount, DiscountNotFound, DiscountScope, DiscountUsage
from shop.kit.clock import utcnow
from shop.kit.db import in_transaction
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
    usage = {}  # a guest has used no discount yet
    if limited and cart.user_id is not None:
        usage = await DiscountUsage.counts(cart.user_id, limited, session)
    context = PricingContext(products, discounts, usage, utcnow(), currency)
    return price(cart.items, code, context)


async def apply_code(owner: CartOwner, code: str, currency: str, throttle: Throttle) -> Quote:
    """Put a promo code on the cart, if it applies to it now; a new one replaces the old.

    The code is judged on the database's figures, not the cache's. A code that cannot be
    used is refused as unknown (404) unless the customer can act on the reason (a minimum
    subtotal, their own uses); a customer who keeps trying codes that cannot be used is
    refused for a while (429).
    """
    attempts = f"promo-code:{owner.user_id or owner.guest}"
    await throttle.attempt([attempts], utcnow())
    cart = await Cart.of(owner)
    catalog = RememberingCatalog()
    quote = await quote_cart(cart, currency, catalog, code=code)
    refusal = quote.cart_discount.refusal if quote.cart_discount else None
    if refusal is not None:
        if isinstance(refusal, DiscountNotFound) or not refusal.actionable:
            raise DiscountNotFound(f"No promo code {code}")
        raise refusal
    await throttle.give_back(attempts)
    cart = await Cart.set_discount_code(owner, code)
    return await quote_cart(cart, currency, catalog)


class MergedLine(NamedTuple):
    """A guest's line that did not go over whole: ``added`` of ``requested`` units, and why."""

    product_id: PydanticObjectId
    requested: int
    added: int
    reason: str  # a problem code: insufficient_stock, line_quantity_exceeded, cart_full, ...


class Merged(NamedTuple):
    cart: Cart
    capped: list[MergedLine]  # some units went over
    left_out: list[MergedLine]  # none did


async def merge_guest_cart(
    user_id: PydanticObjectId, guest: CartOwner, catalog: CatalogReader, limits: CartLimits
) -> Merged:
    """Move a guest's lines into the customer's cart, and end the guest's cart: in one
    transaction, so that a failure part-way leaves both carts as they were, and a second
    merge of the same token, at once or later, finds nothing (no line counts twice).

    Quantities of the same product add up, as the customer's own adds do; what the product's
    stock or the cart's limits do not allow is capped, and the answer says so. The guest's
    promo code comes along when the customer's cart has none. An add of the customer's that
    lands meanwhile is a write conflict, which retries the transaction: it is counted too.
    """
    owner = CartOwner.customer(user_id)

    async def merge(session: AsyncClientSession) -> Merged:
        taken = await Cart.take_guest_cart(guest, session)
        cart = await Cart.of(owner, session)
        products = await catalog.products([line.product_id for line in taken.items])
        merged = cart.model_copy(update={"updated_at": utcnow()})
        capped: list[MergedLine] = []
        left_out: list[MergedLine] = []
        for line in taken.items:
            product = products.get(line.product_id)
            if product is None or not product.is_visible_to(admin=False):
                left_out.append(
                    MergedLine(line.product_id, line.quantity, 0, "product_unavailable")
                )
                continue
            added, reason = _add_what_fits(merged, product, line.quantity, limits)
            if added < line.quantity:
                went = MergedLine(line.product_id, line.quantity, added, reason or "")
                (capped if added else left_out).append(went)
        if merged.discount_code is None:
            merged.discount_code = taken.discount_code
        await Cart.store(owner, merged, session)
        return Merged(merged, capped, left_out)

    result = await in_transaction(merge)
    result.cart.remember(owner)  # as committed: the next add is one update
    return result


def _add_what_fits(
    cart: Cart, product: Product, wanted: int, limits: CartLimits
) -> tuple[int, str | None]:
    """Add to ``cart`` as many of ``wanted`` units as the stock and its limits allow."""
    assert product.id is not None
    held = cart.quantity_of(product.id)
    by_stock, by_line = product.stock - held, limits.line_quantity - held
    take = min(wanted, by_stock, by_line)
    reason = None
    if take < wanted:
        reason = InsufficientStock.code if by_stock <= by_line else LineQuantityExceeded.code
    if take <= 0:
        return 0, reason
    try:
        cart.add(product, take, limits)
    except CartFull:
        return 0, CartFull.code
    return take, reason
