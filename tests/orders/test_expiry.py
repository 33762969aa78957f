import asyncio
from datetime import timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from shop.background import run_sweeper
from shop.kit.clock import ShiftedClock, utcnow
from shop.kit.config import AppSettings
from shop.orders.models import Order, OrderStatus, PaymentAttempt, PendingOrder
from shop.orders.service import sweep_overdue
from shop.payments.mock import ProviderRefund
from tests.factories import (
    Account,
    PausingProvider,
    assert_problem,
    charges_for,
    make_product,
    make_user,
    pay,
    place_order,
    stock_of,
)

# Deadlines are passed by moving the service's clock, never by waiting. They stay far ahead
# of the database's own clock, so its TTL monitor cannot remove a payment window while a
# test runs, however slow the machine.
TIMEOUT = 600
PAST_THE_DEADLINE = TIMEOUT + 1


@pytest.fixture
def short_timeout(settings: AppSettings) -> AppSettings:
    settings.payment_timeout_seconds = TIMEOUT
    return settings


async def test_an_unpaid_order_is_cancelled_on_read_after_its_deadline(
    client: AsyncClient, short_timeout: AppSettings, clock: ShiftedClock, customer: Account
) -> None:
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 2))
    assert await stock_of(product) == 3
    clock.advance(PAST_THE_DEADLINE)

    # The TTL monitor has not run yet, but the window is shut all the same.
    assert await PendingOrder.get(order["id"]) is not None
    reads = await asyncio.gather(
        *(client.get(f"/order/{order['id']}/", headers=customer.headers) for _ in range(5))
    )
    for read in reads:
        assert read.json()["status"] == "cancelled"
        last = read.json()["status_history"][-1]
        assert (last["status"], last["reason"]) == ("cancelled", "payment_timeout")
    assert await stock_of(product) == 5  # released once, not five times
    assert await PendingOrder.get(order["id"]) is None
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.cancelled


async def test_an_overdue_order_cannot_be_paid_while_its_window_document_remains(
    client: AsyncClient, short_timeout: AppSettings, clock: ShiftedClock, customer: Account
) -> None:
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 1))
    clock.advance(PAST_THE_DEADLINE)
    assert await PendingOrder.get(order["id"]) is not None
    assert_problem(await pay(client, customer, order["id"]), 409, "order_expired")
    assert await charges_for(order["id"]) == []
    assert await stock_of(product) == 5
    assert_problem(await pay(client, customer, order["id"]), 409, "order_expired")


async def test_the_sweeper_cancels_orders_nobody_reads(
    client: AsyncClient,
    app: FastAPI,
    short_timeout: AppSettings,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    product = await make_product(stock=10)
    overdue = [await place_order(client, customer, (product, 2)) for _ in range(3)]
    short_timeout.payment_timeout_seconds = 3 * TIMEOUT
    fresh = await place_order(client, customer, (product, 1))
    assert await stock_of(product) == 3
    clock.advance(PAST_THE_DEADLINE)

    # Several service processes may sweep at once; stock still comes back once per order.
    providers = app.state.payment_providers
    counts = await asyncio.gather(*(sweep_overdue(providers) for _ in range(4)))
    assert sum(counts) == 3
    assert await stock_of(product) == 9
    statuses = {str(o.id): o.status for o in await Order.find_all().to_list()}
    assert statuses == {
        **{o["id"]: OrderStatus.cancelled for o in overdue},
        fresh["id"]: OrderStatus.pending_payment,
    }


async def test_a_payment_running_when_the_deadline_passes_ends_paid_and_never_cancelled(
    client: AsyncClient,
    app: FastAPI,
    short_timeout: AppSettings,
    paused_provider: PausingProvider,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    short_timeout.payment_hold_seconds = 2 * TIMEOUT
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 1))
    paying = asyncio.create_task(pay(client, customer, order["id"]))
    await paused_provider.charging.wait()
    clock.advance(PAST_THE_DEADLINE)  # while the charge is running, within its hold

    read = await client.get(f"/order/{order['id']}/", headers=customer.headers)
    assert read.json()["status"] == "pending_payment"  # the attempt holds it
    assert await sweep_overdue(app.state.payment_providers) == 0
    paused_provider.release()
    paid = await paying
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"
    assert await sweep_overdue(app.state.payment_providers) == 0
    assert await stock_of(product) == 4
    stored = await Order.get(order["id"])
    assert stored is not None
    assert [h.status for h in stored.status_history] == [
        OrderStatus.pending_payment,
        OrderStatus.paid,
    ]


async def start_payment_then_crash(order_id: str) -> tuple[Order, PaymentAttempt]:
    """A payment attempt that claimed the order, and whose process then died."""
    order = await Order.get(order_id)
    assert order is not None
    attempt = order.start_payment("mock", "pm_card_visa", utcnow(), timedelta(seconds=1))
    assert await order.save_if_unchanged()
    return order, attempt


async def test_a_crashed_payment_that_charged_is_completed_not_cancelled(
    client: AsyncClient,
    app: FastAPI,
    short_timeout: AppSettings,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    """The process died after the provider charged: the next reader finds the charge."""
    product = await make_product(stock=5)
    placed = await place_order(client, customer, (product, 1))
    order, attempt = await start_payment_then_crash(placed["id"])
    provider = app.state.payment_providers["mock"]
    await provider.charge(
        key=attempt.charge_key(order.id), amount=order.total, currency="EUR", method="pm_card_visa"
    )
    clock.advance(PAST_THE_DEADLINE)  # and past the attempt's hold

    read = await client.get(f"/order/{placed['id']}/", headers=customer.headers)
    assert read.json()["status"] == "paid"
    assert await stock_of(product) == 4
    assert len(await charges_for(placed["id"])) == 1


async def test_a_crashed_payment_that_did_not_charge_is_cancelled(
    client: AsyncClient,
    app: FastAPI,
    short_timeout: AppSettings,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    product = await make_product(stock=5)
    placed = await place_order(client, customer, (product, 1))
    await start_payment_then_crash(placed["id"])
    clock.advance(PAST_THE_DEADLINE)

    assert await sweep_overdue(app.state.payment_providers) == 1
    assert await stock_of(product) == 5
    assert await charges_for(placed["id"]) == []


async def test_paying_again_after_a_crash_that_charged_does_not_charge_twice(
    client: AsyncClient, app: FastAPI, clock: ShiftedClock
) -> None:
    """Inside the payment window: the customer retries with a new key after the crash."""
    account = await make_user(app)
    placed = await place_order(client, account, (await make_product(stock=5), 1))
    order, attempt = await start_payment_then_crash(placed["id"])
    await app.state.payment_providers["mock"].charge(
        key=attempt.charge_key(order.id), amount=order.total, currency="EUR", method="pm_card_visa"
    )
    clock.advance(1.1)  # the crashed attempt's hold runs out

    reads = await asyncio.gather(
        *(client.get(f"/order/{placed['id']}/", headers=account.headers) for _ in range(5))
    )
    assert {r.json()["status"] for r in reads} == {"paid"}
    assert_problem(await pay(client, account, placed["id"]), 409, "order_already_paid")
    assert len(await charges_for(placed["id"])) == 1
    assert await ProviderRefund.count() == 0


async def test_paying_again_after_a_crash_that_did_not_charge_works(
    client: AsyncClient, clock: ShiftedClock, customer: Account
) -> None:
    placed = await place_order(client, customer, (await make_product(stock=5), 1))
    await start_payment_then_crash(placed["id"])
    assert_problem(await pay(client, customer, placed["id"]), 409, "payment_in_progress")
    clock.advance(1.1)
    paid = await pay(client, customer, placed["id"])
    assert paid.json()["status"] == "paid"
    assert [c.key.rsplit("-", 1)[1] for c in await charges_for(placed["id"])] == ["2"]


async def test_a_charge_that_lands_after_the_order_was_cancelled_is_refunded(
    client: AsyncClient,
    app: FastAPI,
    settings: AppSettings,
    paused_provider: PausingProvider,
    clock: ShiftedClock,
) -> None:
    """The charge outlives its attempt's hold; meanwhile the deadline passes and the sweeper
    cancels the order. The late charge must not leave the customer paying for nothing."""
    account = await make_user(app)
    product = await make_product(stock=5)
    order = await place_order(client, account, (product, 1))
    paying = asyncio.create_task(pay(client, account, order["id"]))
    await paused_provider.charging.wait()
    clock.advance(settings.payment_timeout_seconds + settings.payment_hold_seconds)

    assert await sweep_overdue(app.state.payment_providers) == 1
    paused_provider.release()
    assert_problem(await paying, 409, "order_expired")
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.cancelled
    assert await stock_of(product) == 5
    charges = await charges_for(order["id"])
    refunds = await ProviderRefund.find_all().to_list()
    assert [c.payment_id for c in charges] == [r.payment_id for r in refunds]
    assert [r.amount for r in refunds] == [charges[0].amount]


async def test_the_background_sweeper_runs_on_its_own(
    client: AsyncClient,
    app: FastAPI,
    short_timeout: AppSettings,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 2))
    clock.advance(PAST_THE_DEADLINE)
    sweeper = asyncio.create_task(
        run_sweeper(app.state.payment_providers, every=0.2, hold=timedelta(seconds=30))
    )
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            stored = await Order.get(order["id"])
            assert stored is not None
            if stored.status is OrderStatus.cancelled:
                break
    finally:
        sweeper.cancel()
    assert stored.status is OrderStatus.cancelled
    assert await stock_of(product) == 5
