"""The order's state machine and its return arithmetic (without I/O, but for the payment
query checked against the database)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from beanie import PydanticObjectId

from shop.kit.clock import utcnow
from shop.orders.models import (
    CancelReason,
    IllegalOrderTransition,
    Order,
    OrderAlreadyPaid,
    OrderCancelled,
    OrderEmpty,
    OrderExpired,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentAttempt,
    PaymentInProgress,
    ProductNotInOrder,
    ReturnNotAllowed,
    ReturnQuantityExceeded,
    ReturnWindowClosed,
)

NOW = utcnow()
HOLD = timedelta(seconds=30)
WINDOW = timedelta(days=14)


def an_order(net_total: str = "89.99", quantity: int = 3) -> Order:
    line = OrderLine(
        product_id=PydanticObjectId(),
        name="Thing",
        unit_price=Decimal("33.33"),
        quantity=quantity,
        line_subtotal=Decimal("99.99"),
        line_total=Decimal("99.99"),
        cart_discount_share=Decimal("10.00"),
        net_total=Decimal(net_total),
    )
    return Order(
        user_id=PydanticObjectId(),
        lines=[line],
        subtotal=Decimal("99.99"),
        total=Decimal(net_total),
        currency="EUR",
        expires_at=NOW + timedelta(minutes=30),
    )


def paid(order: Order) -> Order:
    attempt = order.start_payment("mock", "pm_card_visa", NOW, HOLD)
    order.pay(
        Payment(
            provider="mock",
            payment_id="ch_1",
            amount=order.total,
            method="pm_card_visa",
            paid_at=NOW,
        ),
        attempt,
    )
    return order


def test_a_payment_attempt_holds_the_order_past_its_deadline() -> None:
    order = an_order()
    started = order.expires_at - timedelta(seconds=10)
    order.start_payment("mock", "pm_card_visa", started, HOLD)
    with pytest.raises(PaymentInProgress):
        order.start_payment("mock", "pm_card_visa", started, HOLD)
    with pytest.raises(PaymentInProgress):
        order.cancel(CancelReason.payment_timeout, started)
    assert not order.is_overdue(order.expires_at + timedelta(seconds=10))
    assert order.is_overdue(started + HOLD)


def test_only_the_holding_attempt_can_pay() -> None:
    order = an_order()
    first = order.start_payment("mock", "pm_card_visa", NOW, HOLD)
    order.payment_failed(first)
    second = order.start_payment("mock", "pm_card_visa", NOW, HOLD)
    payment = Payment(provider="mock", payment_id="ch", amount=order.total, method="m", paid_at=NOW)
    with pytest.raises(IllegalOrderTransition):
        order.pay(payment, first)
    order.pay(payment, second)
    assert (order.status, order.payment_in_progress) == (OrderStatus.paid, None)
    assert [h.status for h in order.status_history] == [OrderStatus.paid]


def test_an_order_with_nothing_in_it_cannot_be_paid() -> None:
    empty = an_order()
    empty.lines = []
    with pytest.raises(OrderEmpty):
        empty.start_payment("mock", "pm_card_visa", NOW, HOLD)
    assert empty.payment_attempts == 0


def test_illegal_moves_are_refused() -> None:
    order = paid(an_order())
    with pytest.raises(OrderAlreadyPaid):
        order.check_payable(NOW)
    with pytest.raises(OrderAlreadyPaid):
        order.cancel(CancelReason.customer_request, NOW)
    late = an_order()
    with pytest.raises(OrderExpired):
        late.check_payable(NOW + timedelta(minutes=30))
    late.cancel(CancelReason.payment_timeout, NOW)
    with pytest.raises(OrderCancelled):
        late.cancel(CancelReason.customer_request, NOW)
    with pytest.raises(OrderExpired):
        late.start_payment("mock", "pm_card_visa", NOW, HOLD)
    with pytest.raises(ReturnNotAllowed):
        late.claim_return({late.lines[0].product_id: 1}, NOW, WINDOW)


def test_refunds_split_the_line_and_the_last_takes_the_remainder() -> None:
    order = paid(an_order("89.99", 3))
    product = order.lines[0].product_id
    # Cumulative shares: round(89.99 * 1/3) = 30.00, round(89.99 * 2/3) = 59.99, then all.
    assert order.claim_return({product: 1}, NOW, WINDOW) == {product: Decimal("30.00")}
    assert order.claim_return({product: 1}, NOW, WINDOW) == {product: Decimal("29.99")}
    with pytest.raises(ReturnQuantityExceeded):
        order.claim_return({product: 2}, NOW, WINDOW)
    assert order.claim_return({product: 1}, NOW, WINDOW) == {product: Decimal("30.00")}

    order.record_refund({product: (1, Decimal("30.00"))}, NOW)
    assert order.status is OrderStatus.partially_returned
    order.record_refund({product: (2, Decimal("59.99"))}, NOW)
    assert (order.status, order.refunded_total) == (OrderStatus.returned, Decimal("89.99"))


def test_a_rejected_return_frees_its_units() -> None:
    order = paid(an_order("10.00", 2))
    product = order.lines[0].product_id
    amounts = order.claim_return({product: 2}, NOW, WINDOW)
    order.release_return({product: (2, amounts[product])})
    assert order.claim_return({product: 2}, NOW, WINDOW) == {product: Decimal("10.00")}


def test_returns_need_the_window_and_a_product_of_the_order() -> None:
    order = paid(an_order())
    with pytest.raises(ReturnWindowClosed):
        order.claim_return(
            {order.lines[0].product_id: 1}, NOW + WINDOW + timedelta(seconds=1), WINDOW
        )
    with pytest.raises(ProductNotInOrder):
        order.claim_return({PydanticObjectId(): 1}, NOW, WINDOW)


@pytest.mark.parametrize("status", list(OrderStatus))
async def test_the_payment_query_states_check_payable_for_orders_no_attempt_holds(
    status: OrderStatus,
) -> None:
    """``Order.payable_query`` is ``check_payable`` as a filter: over every status, deadline,
    emptiness and attempt, the database matches exactly the orders that check passes and no
    attempt holds (a crashed attempt is reconciled before anyone claims the order)."""
    cases = []
    for expired in (False, True):
        for empty in (False, True):
            for attempt in (None, "running", "crashed"):
                order = an_order()
                order.status = status
                order.expires_at = NOW + timedelta(minutes=-1 if expired else 30)
                if empty:
                    order.lines = []
                if attempt is not None:
                    until = NOW + (HOLD if attempt == "running" else -HOLD)
                    order.payment_in_progress = PaymentAttempt(
                        number=1, provider="mock", method="pm_card_visa", until=until
                    )
                await order.insert()
                try:
                    order.check_payable(NOW)
                    payable = attempt is None
                except (OrderAlreadyPaid, OrderExpired, OrderEmpty, PaymentInProgress):
                    payable = False
                cases.append((order.id, payable))
    for order_id, payable in cases:
        matched = await Order.find_one({"_id": order_id, **Order.payable_query(NOW)})
        assert (matched is not None) == payable, order_id
