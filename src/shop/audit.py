"""The books, checked over the whole database (``shop audit``; the invariant tests use it too).

Goods: for every product, what is in stock, plus what unpaid orders hold, plus what paid
orders keep (sold and not returned) is every unit the shop ever received.
Money: every order adds up; a paid order has exactly one charge, for its total (a free one
none, and its payment says it charged nothing); an unpaid or cancelled one keeps no money;
what an order refunded is what its refunded returns say, never more than it was paid.
Every charge at the provider belongs to an order, every refund to a return (or voids a
charge that came too late), and no charge is refunded beyond what it was.

The provider's side is what the simulated provider keeps, and what Stripe says of every
PaymentIntent the shop made (and its refunds) when Stripe is configured.

It reads whole collections: meant for a quiet hour, or a copy of the database.
"""

import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from beanie import PydanticObjectId

from shop.catalog.models import Product
from shop.kit.money import ZERO
from shop.orders.models import Order, OrderStatus
from shop.payments.mock import ProviderCharge, ProviderRefund
from shop.payments.provider import NOTHING, ChargeStatus
from shop.payments.stripe_provider import StripeIntent, StripeProvider
from shop.returns.models import ReturnRequest, ReturnStatus

PAID = (OrderStatus.paid, OrderStatus.partially_returned, OrderStatus.returned)
_CHARGE_KEY = re.compile(r"^order-([0-9a-f]{24})-attempt-\d+$")
_RETURN_KEY = re.compile(r"^return-([0-9a-f]{24})$")


@dataclass(frozen=True)
class Violation:
    rule: str  # stock, order_totals, order_payment, order_refunds, charge, refund
    subject: str  # what breaks it: "product <id>", "order <id>", "charge <id>", ...
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}: {self.detail}"


@dataclass(frozen=True)
class KeptCharge:
    """A charge as its provider keeps it."""

    payment_id: str
    key: str
    amount: Decimal
    status: ChargeStatus
    amount_refunded: Decimal


@dataclass(frozen=True)
class KeptRefund:
    refund_id: str
    key: str
    payment_id: str
    amount: Decimal


async def audit(stripe: StripeProvider | None = None) -> list[Violation]:
    products = await Product.find_all().to_list()
    orders = await Order.find_all().to_list()
    returns = await ReturnRequest.find_all().to_list()
    charges, refunds = await _simulated_books()
    if stripe is not None:
        at_stripe = await _stripe_books(stripe)
        charges, refunds = charges + at_stripe[0], refunds + at_stripe[1]
    return [
        *_stock(products, orders),
        *(v for order in orders for v in _totals(order)),
        *_payments(orders, charges, refunds),
        *_refunds(orders, returns, refunds),
        *_provider(orders, returns, charges, refunds),
    ]


async def _simulated_books() -> tuple[list[KeptCharge], list[KeptRefund]]:
    charges = [
        KeptCharge(c.payment_id, c.key, Decimal(c.amount), c.status, Decimal(c.amount_refunded))
        for c in await ProviderCharge.find_all().to_list()
    ]
    refunds = [
        KeptRefund(r.refund_id, r.key, r.payment_id, Decimal(r.amount))
        for r in await ProviderRefund.find_all().to_list()
    ]
    return charges, refunds


async def _stripe_books(stripe: StripeProvider) -> tuple[list[KeptCharge], list[KeptRefund]]:
    """Every PaymentIntent the shop made, and its refunds, as Stripe has them now."""
    charges, refunds = [], []
    for known in await StripeIntent.find_all().to_list():
        charge = await stripe.intent(known.payment_intent)
        made = (
            await stripe.refunds_of(known.payment_intent)
            if charge.status is ChargeStatus.succeeded
            else []
        )
        refunds += [KeptRefund(r.refund_id, r.key, r.payment_id, r.amount) for r in made]
        refunded = sum((r.amount for r in made), ZERO)
        charges.append(
            KeptCharge(charge.payment_id, known.key, charge.amount, charge.status, refunded)
        )
    return charges, refunds


def _stock(products: list[Product], orders: list[Order]) -> list[Violation]:
    held: dict[PydanticObjectId, int] = defaultdict(int)
    for order in orders:
        if order.status is OrderStatus.cancelled:
            continue
        for line in order.lines:
            held[line.product_id] += line.quantity - line.returned_quantity
    found = []
    for product in products:
        assert product.id is not None
        accounted = product.stock + held[product.id]
        if product.stock < 0 or accounted != product.received:
            found.append(
                Violation(
                    "stock",
                    f"product {product.id}",
                    f"in stock {product.stock} + held by orders {held[product.id]} = {accounted}, "
                    f"but {product.received} were received",
                )
            )
    return found


def _totals(order: Order) -> list[Violation]:
    def wrong(detail: str) -> Violation:
        return Violation("order_totals", f"order {order.id}", detail)

    found = []
    for line in order.lines:
        if Decimal(line.line_subtotal) - Decimal(line.discount) != Decimal(line.line_total):
            found.append(wrong(f"line {line.product_id}: subtotal - discount != line total"))
        if Decimal(line.line_total) - Decimal(line.cart_discount_share) != Decimal(line.net_total):
            found.append(wrong(f"line {line.product_id}: line total - cart share != net total"))
        if Decimal(line.refunded_amount) > Decimal(line.net_total):
            found.append(wrong(f"line {line.product_id}: refunded more than was paid for it"))
    if sum((Decimal(line.line_total) for line in order.lines), ZERO) != Decimal(order.subtotal):
        found.append(wrong("the lines do not add up to the subtotal"))
    off = Decimal(order.cart_discount.amount) if order.cart_discount else ZERO
    if Decimal(order.subtotal) - off != Decimal(order.total):
        found.append(wrong("subtotal - cart discount != total"))
    if sum((Decimal(line.net_total) for line in order.lines), ZERO) != Decimal(order.total):
        found.append(wrong("the lines' net totals do not add up to the total"))
    return found


def _succeeded(charges: list[KeptCharge]) -> list[KeptCharge]:
    return [c for c in charges if c.status is ChargeStatus.succeeded]


def _payments(
    orders: list[Order], charges: list[KeptCharge], refunds: list[KeptRefund]
) -> list[Violation]:
    by_order: dict[str, list[KeptCharge]] = defaultdict(list)
    for charge in _succeeded(charges):
        if match := _CHARGE_KEY.match(charge.key):
            by_order[match.group(1)].append(charge)
    voided = {r.payment_id for r in refunds if r.key.endswith("-void")}
    found = []
    for order in orders:
        subject = f"order {order.id}"
        kept = [c for c in by_order[str(order.id)] if c.payment_id not in voided]
        if order.status in PAID:
            payment = order.payment
            if payment is None:
                found.append(Violation("order_payment", subject, f"{order.status} with no payment"))
                continue
            charged = [] if payment.payment_id.startswith(NOTHING) else [payment.payment_id]
            if Decimal(order.total) > 0 and not charged:
                found.append(Violation("order_payment", subject, "charged nothing for a total"))
            if [c.payment_id for c in kept] != charged:
                found.append(
                    Violation(
                        "order_payment",
                        subject,
                        f"paid by {payment.payment_id}, but the provider kept "
                        f"{[c.payment_id for c in kept] or 'no charge'}",
                    )
                )
            if Decimal(payment.amount) != Decimal(order.total):
                found.append(Violation("order_payment", subject, "paid amount != order total"))
        elif kept:
            found.append(
                Violation(
                    "order_payment",
                    subject,
                    f"{order.status} but the provider kept {[c.payment_id for c in kept]}",
                )
            )
    return found


def _refunds(
    orders: list[Order], returns: list[ReturnRequest], refunds: list[KeptRefund]
) -> list[Violation]:
    refunded: dict[PydanticObjectId, Decimal] = defaultdict(lambda: ZERO)
    for request in returns:
        if request.status is ReturnStatus.refunded:
            refunded[request.order_id] += Decimal(request.refund_amount)
    found = []
    for order in orders:
        assert order.id is not None
        subject = f"order {order.id}"
        if Decimal(order.refunded_total) != refunded[order.id]:
            found.append(
                Violation(
                    "order_refunds",
                    subject,
                    f"refunded {order.refunded_total}, "
                    f"its refunded returns say {refunded[order.id]}",
                )
            )
        if Decimal(order.refunded_total) > Decimal(order.total):
            found.append(Violation("order_refunds", subject, "refunded more than its total"))
        everything = bool(order.lines) and all(
            line.returned_quantity == line.quantity for line in order.lines
        )
        if (order.status is OrderStatus.returned) != everything and order.status in PAID:
            found.append(
                Violation("order_refunds", subject, f"{order.status}, but returned units disagree")
            )
    return found


def _provider(
    orders: list[Order],
    returns: list[ReturnRequest],
    charges: list[KeptCharge],
    refunds: list[KeptRefund],
) -> list[Violation]:
    order_ids = {str(o.id) for o in orders}
    refunded_returns = {
        str(r.id): r for r in returns if r.status in (ReturnStatus.approved, ReturnStatus.refunded)
    }
    by_payment = {c.payment_id: c for c in charges}
    found = []
    for succeeded in _succeeded(charges):
        match = _CHARGE_KEY.match(succeeded.key)
        if match is None or match.group(1) not in order_ids:
            subject = f"charge {succeeded.payment_id}"
            found.append(Violation("charge", subject, f"belongs to no order ({succeeded.key})"))
    refunded_per_charge: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for refund in refunds:
        refunded_per_charge[refund.payment_id] += Decimal(refund.amount)
        subject = f"refund {refund.refund_id}"
        charge = by_payment.get(refund.payment_id)
        if charge is None:
            found.append(Violation("refund", subject, f"refunds no charge ({refund.payment_id})"))
        elif refund.key.endswith("-void"):
            if refund.key != f"{charge.key}-void" or refund.amount != charge.amount:
                found.append(Violation("refund", subject, "a void that does not match its charge"))
        elif (match := _RETURN_KEY.match(refund.key)) is None or (
            request := refunded_returns.get(match.group(1))
        ) is None:
            found.append(Violation("refund", subject, f"belongs to no return ({refund.key})"))
        elif Decimal(request.refund_amount) != Decimal(refund.amount):
            found.append(Violation("refund", subject, "amount differs from its return's"))
    for payment_id, amount in refunded_per_charge.items():
        if (refunded := by_payment.get(payment_id)) is None:
            continue
        if amount != Decimal(refunded.amount_refunded):
            found.append(
                Violation("charge", f"charge {payment_id}", "refunds differ from its refunded sum")
            )
        if amount > Decimal(refunded.amount):
            found.append(Violation("charge", f"charge {payment_id}", "refunded beyond its amount"))
    return found
