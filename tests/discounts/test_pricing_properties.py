"""Properties of pricing and refunds over generated carts, discounts and return sequences."""

from datetime import timedelta
from decimal import Decimal
from itertools import cycle

from beanie import PydanticObjectId
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shop.cart.models import CartItem
from shop.catalog.models import Product
from shop.discounts.models import Discount, DiscountKind, DiscountScope
from shop.kit.clock import utcnow
from shop.kit.money import ZERO
from shop.orders.models import Order, OrderLine
from shop.pricing import PricingContext, allocate, price

NOW = utcnow()
cents = st.integers(min_value=1, max_value=99_999).map(lambda c: Decimal(c) / 100)
percents = st.integers(min_value=1, max_value=100).map(Decimal)
kinds = st.sampled_from([DiscountKind.percent, DiscountKind.fixed])


@st.composite
def carts(draw: st.DrawFn) -> tuple[list[CartItem], PricingContext]:
    products = [
        Product(id=PydanticObjectId(), name=f"P{i}", price=draw(cents), stock=1000)
        for i in range(draw(st.integers(min_value=1, max_value=6)))
    ]
    items = [
        CartItem(product_id=p.id, quantity=draw(st.integers(min_value=1, max_value=20)))
        for p in products
        if p.id is not None
    ]
    discounts = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        kind = draw(kinds)
        discounts.append(
            Discount(
                id=PydanticObjectId(),
                name="sale",
                scope=DiscountScope.product,
                kind=kind,
                value=draw(percents if kind is DiscountKind.percent else cents),
                product_ids=[p.id for p in products if draw(st.booleans()) and p.id],
            )
        )
    if draw(st.booleans()):
        kind = draw(kinds)
        discounts.append(
            Discount(
                id=PydanticObjectId(),
                name="cart",
                scope=DiscountScope.cart,
                kind=kind,
                value=draw(percents if kind is DiscountKind.percent else cents),
            )
        )
    by_id = {p.id: p for p in products if p.id is not None}
    return items, PricingContext(by_id, discounts, {}, NOW, "EUR")


@settings(max_examples=300, deadline=None)
@given(carts())
def test_totals_always_add_up_to_the_cent(cart: tuple[list[CartItem], PricingContext]) -> None:
    items, context = cart
    quote = price(items, None, context)
    for line in quote.lines:
        assert ZERO <= line.discount <= line.line_subtotal
        assert line.line_total == line.line_subtotal - line.discount
        assert line.line_total == line.line_total.quantize(Decimal("0.01"))
    assert quote.subtotal == sum(line.line_total for line in quote.lines)
    cart_discount = quote.cart_discount.amount if quote.cart_discount else ZERO
    assert ZERO <= cart_discount <= quote.subtotal
    assert quote.total == quote.subtotal - cart_discount

    order = Order.from_quote(PydanticObjectId(), 1, quote, NOW, timedelta(minutes=30))
    assert sum(line.cart_discount_share for line in order.lines) == cart_discount
    assert sum(line.net_total for line in order.lines) == quote.total
    assert all(ZERO <= line.net_total <= line.line_total for line in order.lines)


@settings(max_examples=300, deadline=None)
@given(
    amount=cents,
    weights=st.lists(cents, min_size=1, max_size=8),
)
def test_allocation_is_exact_and_bounded(amount: Decimal, weights: list[Decimal]) -> None:
    amount = min(amount, sum(weights))
    shares = allocate(amount, weights)
    assert sum(shares) == amount
    assert all(ZERO <= share <= weight for share, weight in zip(shares, weights, strict=True))


@settings(max_examples=300, deadline=None)
@given(
    cart=carts(),
    batches=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=20),
)
def test_returning_everything_in_any_batches_refunds_exactly_what_was_paid(
    cart: tuple[list[CartItem], PricingContext], batches: list[int]
) -> None:
    items, context = cart
    order = Order.from_quote(
        PydanticObjectId(), 1, price(items, None, context), NOW, timedelta(minutes=30)
    )
    order.paid_at = NOW
    order.status = order.status.paid
    refunded = ZERO
    for line in order.lines:
        sizes = cycle(batches)
        while line.returnable_quantity:
            size = min(next(sizes), line.returnable_quantity)
            amounts = order.claim_return({line.product_id: size}, NOW, timedelta(days=1))
            assert amounts[line.product_id] >= ZERO
            refunded += amounts[line.product_id]
    assert refunded == order.total


@settings(max_examples=1000, deadline=None)
@given(
    net_cents=st.integers(min_value=0, max_value=500),
    quantity=st.integers(min_value=1, max_value=30),
    batches=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=30),
)
@example(net_cents=9, quantity=6, batches=[1])  # half-cent shares that once rounded past 0.09
def test_every_partial_refund_of_a_line_is_non_negative_and_they_sum_to_its_net(
    net_cents: int, quantity: int, batches: list[int]
) -> None:
    line = OrderLine(
        product_id=PydanticObjectId(),
        name="P",
        unit_price=ZERO,
        quantity=quantity,
        line_subtotal=ZERO,
        line_total=ZERO,
        net_total=Decimal(net_cents) / 100,
    )
    refunds = []
    sizes = cycle(batches)
    while line.returnable_quantity:
        size = min(next(sizes), line.returnable_quantity)
        refunds.append(line.refund_for(size))
        line.claimed_quantity += size
        line.claimed_amount += refunds[-1]
    assert all(refund >= ZERO for refund in refunds), refunds
    assert sum(refunds) == line.net_total
