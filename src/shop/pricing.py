"""The one pricing function, shared by the cart view and checkout.

Rules:
- each line gets the single best product discount valid now (they never stack);
- then at most one cart discount, on the sum of the line totals: the applied code if it is
  valid, else the best automatic cart discount;
- no discount takes a line or the cart below zero;
- amounts are rounded to the currency's minor unit by ``money.round_money`` (half up) where
  a discount is computed: once per line, once for the cart; so the sum of the line totals
  minus the cart discount is the total, to the cent.
At checkout the cart discount is split across the lines once (``allocate``).
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from beanie import PydanticObjectId

from shop.cart.models import CartItem
from shop.catalog.models import Product
from shop.discounts.models import Discount, DiscountNotFound, DiscountRefused, DiscountScope
from shop.kit.money import CENT, ZERO, round_money


@dataclass(frozen=True)
class PricedLine:
    product_id: PydanticObjectId
    name: str
    unit_price: Decimal
    quantity: int
    line_subtotal: Decimal
    discount: Decimal
    discount_id: PydanticObjectId | None
    line_total: Decimal
    available: bool
    in_stock: bool


@dataclass(frozen=True)
class CartDiscount:
    """The cart-level discount: applied with an amount, or a code shown with why it is not."""

    discount_id: PydanticObjectId | None
    code: str | None
    amount: Decimal
    refusal: DiscountRefused | DiscountNotFound | None = None

    @property
    def applied(self) -> bool:
        return self.refusal is None

    @property
    def reason(self) -> str | None:
        return None if self.refusal is None else self.refusal.code


@dataclass(frozen=True)
class Quote:
    lines: list[PricedLine]
    subtotal: Decimal
    cart_discount: CartDiscount | None
    total: Decimal
    currency: str
    discounts_used: list[Discount] = field(default_factory=list)

    @property
    def total_quantity(self) -> int:
        return sum(line.quantity for line in self.lines if line.available)


@dataclass(frozen=True)
class PricingContext:
    """Everything prices depend on besides the cart: read once, then priced without I/O."""

    products: dict[PydanticObjectId, Product]
    discounts: list[Discount]
    usage: dict[PydanticObjectId, int]  # this user's redemptions per discount
    now: datetime
    currency: str


def price(items: list[CartItem], code: str | None, context: PricingContext) -> Quote:
    lines = [_price_line(item, context) for item in items]
    subtotal = sum((line.line_total for line in lines if line.available), ZERO)
    cart_discount, cart_discount_doc = _cart_discount(code, subtotal, context)
    applied = cart_discount.amount if cart_discount and cart_discount.applied else ZERO
    used_ids = {line.discount_id for line in lines if line.available and line.discount_id}
    used = [d for d in context.discounts if d.id in used_ids]
    if cart_discount_doc is not None:
        used.append(cart_discount_doc)
    return Quote(
        lines=lines,
        subtotal=subtotal,
        cart_discount=cart_discount,
        total=subtotal - applied,
        currency=context.currency,
        discounts_used=used,
    )


def _price_line(item: CartItem, context: PricingContext) -> PricedLine:
    product = context.products.get(item.product_id)
    if product is None:
        return PricedLine(
            item.product_id,
            "(removed product)",
            ZERO,
            item.quantity,
            ZERO,
            ZERO,
            None,
            ZERO,
            available=False,
            in_stock=False,
        )
    unit_price = product.unit_price
    line_subtotal = round_money(unit_price * item.quantity)
    best: tuple[Decimal, Discount] | None = None
    for discount in context.discounts:
        if (
            discount.scope is not DiscountScope.product
            or item.product_id not in discount.product_ids
        ):
            continue
        used = context.usage.get(discount.id, 0) if discount.id else 0
        if discount.refusal(context.now, used_by_user=used):
            continue
        amount = discount.unit_amount_off(unit_price, item.quantity)
        if amount > ZERO and (best is None or amount > best[0]):
            best = (amount, discount)
    amount_off = best[0] if best else ZERO
    return PricedLine(
        product_id=item.product_id,
        name=product.name,
        unit_price=unit_price,
        quantity=item.quantity,
        line_subtotal=line_subtotal,
        discount=amount_off,
        discount_id=best[1].id if best else None,
        line_total=line_subtotal - amount_off,
        available=product.active,
        in_stock=product.stock >= item.quantity,
    )


def _cart_discount(
    code: str | None, subtotal: Decimal, context: PricingContext
) -> tuple[CartDiscount | None, Discount | None]:
    def refusal(discount: Discount) -> DiscountRefused | None:
        used = context.usage.get(discount.id, 0) if discount.id else 0
        return discount.refusal(context.now, subtotal, used_by_user=used)

    if code is not None:
        chosen = next(
            (d for d in context.discounts if d.code == code and d.scope is DiscountScope.cart),
            None,
        )
        if chosen is None:
            return CartDiscount(None, code, ZERO, DiscountNotFound(f"No promo code {code}")), None
        if (refused := refusal(chosen)) is not None:
            return CartDiscount(None, code, ZERO, refused), None
        return CartDiscount(chosen.id, code, chosen.amount_off(subtotal)), chosen

    best: tuple[Decimal, Discount] | None = None
    for discount in context.discounts:
        if discount.scope is not DiscountScope.cart or discount.code is not None:
            continue
        if refusal(discount) is None:
            amount = discount.amount_off(subtotal)
            if amount > ZERO and (best is None or amount > best[0]):
                best = (amount, discount)
    if best is None:
        return None, None
    return CartDiscount(best[1].id, None, best[0]), best[1]


def allocate(amount: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split ``amount`` across lines in proportion to ``weights``, rounded, the remainder on
    the last line, and no line given more than its weight (so no line goes below zero)."""
    total = sum(weights, ZERO)
    if not weights or total == ZERO:
        return [ZERO for _ in weights]
    shares = [round_money(amount * w / total) for w in weights[:-1]]
    shares.append(amount - sum(shares, ZERO))
    # Rounding can push the last share past its bounds by a few cents: move those cents to
    # the other lines, from the last one backwards.
    excess = shares[-1] - weights[-1] if shares[-1] > weights[-1] else min(shares[-1], ZERO)
    shares[-1] -= excess
    for i in range(len(shares) - 2, -1, -1):
        while excess > ZERO and shares[i] < weights[i]:
            shares[i], excess = shares[i] + CENT, excess - CENT
        while excess < ZERO and shares[i] > ZERO:
            shares[i], excess = shares[i] - CENT, excess + CENT
    return shares
