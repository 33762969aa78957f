"""A cart's priced answer, written again while nothing it was priced from has changed.

A storefront asks for the cart on every page, and most of the time it has not changed. Its
answer depends on the cart's state, which its revision names (every write gives a new one),
on the catalog cache's entries it was priced from, and on the time only where a discount
starts or ends. So the process keeps the last answer it wrote for each cart with all three.
A view that finds the same revision, every entry still served by the cache and no start or
end passed writes those bytes again, without validating, pricing or serializing anything.

The cart is still read from the database on every view, so another process's change to it
shows at once. The cache's entries bound how stale a price may be, as for any other quote.
Not kept: a quote that read part of the catalog from the database (the next view keeps
one), and a quote that read a customer's own uses of a discount (they change at another's
checkout without a new revision).
"""

from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId

from shop.cart.models import MAX_REMEMBERED, Cart, CartOwner
from shop.cart.schemas import cart_out
from shop.cart.service import quote_cart
from shop.catalog_cache import CatalogCache, Snapshot
from shop.discounts.models import Discount
from shop.kit.clock import as_utc, utcnow


@dataclass(frozen=True)
class _Answer:
    revision: ObjectId
    currency: str
    snapshot: Snapshot
    until: datetime | None  # the first start or end of a discount after it was priced
    body: bytes

    def still_for(self, raw: dict[str, object], currency: str, catalog: CatalogCache) -> bool:
        return (
            raw.get("revision") == self.revision
            and currency == self.currency
            and catalog.serves(self.snapshot)
            and (self.until is None or utcnow() < self.until)
        )


_answers: dict[CartOwner, _Answer] = {}


async def priced_cart(owner: CartOwner, currency: str, catalog: CatalogCache) -> bytes:
    """The owner's cart priced, as the JSON of a ``CartOut``."""
    raw = await Cart.read(owner)
    if raw is not None and (kept := _answers.get(owner)) and kept.still_for(raw, currency, catalog):
        return kept.body
    cart = Cart(user_id=owner.user_id) if raw is None else Cart.read_as(owner, raw)
    now = utcnow()
    snapshot = catalog.snapshot([line.product_id for line in cart.items], cart.discount_code)
    quote = await quote_cart(cart, currency, snapshot or catalog)
    body = cart_out(quote).model_dump_json().encode()
    if snapshot is not None and cart.revision is not None and not _per_customer(cart, snapshot):
        if len(_answers) >= MAX_REMEMBERED:
            _answers.clear()
        _answers[owner] = _Answer(
            cart.revision, currency, snapshot, _next_change(snapshot.relevant, now), body
        )
    return body


def _per_customer(cart: Cart, snapshot: Snapshot) -> bool:
    """Whether the quote read the customer's own uses of a discount."""
    return cart.user_id is not None and any(d.per_user_limit is not None for d in snapshot.relevant)


def _next_change(discounts: list[Discount], now: datetime) -> datetime | None:
    """The first instant after ``now`` at which one of ``discounts`` starts or ends."""
    moments = [
        as_utc(moment)
        for d in discounts
        for moment in (d.starts_at, d.ends_at)
        if moment is not None and as_utc(moment) > now
    ]
    return min(moments, default=None)
