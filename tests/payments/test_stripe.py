"""Payments through Stripe, against a real localstripe process: the SDK's calls, 3-D Secure
finished by webhooks, and every way a webhook can arrive."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from shop.audit import audit
from shop.background import Sweeper
from shop.discounts.models import DiscountKind, DiscountScope
from shop.kit.clock import ShiftedClock
from shop.kit.config import AppSettings
from shop.orders.models import Order, OrderStatus
from shop.orders.service import sweep_unsettled_payments
from shop.orders.webhooks import StripeEvent
from shop.payments.provider import ProviderUnavailable
from shop.payments.stripe_provider import StripeIntent, StripeRefund
from tests.factories import (
    Account,
    assert_problem,
    make_discount,
    make_product,
    make_user,
    pay,
    place_order,
    request_return,
    stock_of,
)
from tests.payments.conftest import WEBHOOK_SECRET, Stripe, event_for, signed
from tests.test_invariants import SIMULATED, STOCK, shopper

pytestmark = pytest.mark.slow

PAST_THE_DEADLINE = 601  # seconds: the stripe fixture gives orders 10 minutes


async def pay_by_stripe(
    client: AsyncClient, customer: Account, order_id: str, method: str, key: str | None = None
) -> httpx.Response:
    return await pay(client, customer, order_id, method, key=key, provider="stripe")


async def wait_for_customer(
    client: AsyncClient, customer: Account, stripe: Stripe, order_id: str
) -> dict[str, Any]:
    """Pay with the card that needs 3-D Secure: 202, and what the browser does next."""
    waiting = await pay_by_stripe(client, customer, order_id, await stripe.card("authentication"))
    assert waiting.status_code == 202, waiting.text
    action: dict[str, Any] = waiting.json()["next_action"]
    return action


async def order_of(client: AsyncClient, customer: Account, order_id: str) -> dict[str, Any]:
    read = await client.get(f"/order/{order_id}/", headers=customer.headers)
    assert read.status_code == 200, read.text
    body: dict[str, Any] = read.json()
    return body


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the condition never held")


async def post_event(client: AsyncClient, body: str, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/payments/stripe/webhook",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )


async def test_a_card_that_succeeds_pays_the_order_with_one_payment_intent(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    order = await place_order(client, customer, (await make_product(price="19.99"), 2))
    paid = await pay_by_stripe(client, customer, order["id"], await stripe.card("succeeds"))
    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert body["status"] == "paid"
    assert body["next_action"] is None
    intent = await stripe.intent(body["payment"]["payment_id"])
    assert intent["status"] == "succeeded"
    assert (intent["amount"], intent["currency"]) == (3998, "eur")
    assert intent["metadata"]["order_id"] == order["id"]
    assert await StripeIntent.find({"order_id": order["id"]}).count() == 1


async def test_a_declined_card_answers_402_with_the_code_and_the_order_stays_payable(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    order = await place_order(client, customer, (await make_product(price="5.00"), 1))
    declined = await pay_by_stripe(client, customer, order["id"], await stripe.card("declined"))
    problem = assert_problem(declined, 402, "payment_declined")
    assert problem["decline_code"] == "card_declined"
    assert (await order_of(client, customer, order["id"]))["status"] == "pending_payment"

    paid = await pay_by_stripe(client, customer, order["id"], await stripe.card("succeeds"))
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid"


async def test_3d_secure_completed_in_the_browser_pays_the_order_by_webhook(
    client: AsyncClient, customer: Account, stripe: Stripe, served: str
) -> None:
    await stripe.send_webhooks_to(served)
    order = await place_order(client, customer, (await make_product(price="12.00"), 1))
    waiting = await pay_by_stripe(
        client, customer, order["id"], await stripe.card("authentication")
    )
    assert waiting.status_code == 202, waiting.text
    body = waiting.json()
    assert body["status"] == "pending_payment"
    action = body["next_action"]
    assert action["type"] == "use_stripe_sdk"
    assert action["client_secret"].startswith(action["payment_id"])
    # Held by this attempt: another one is refused, and charges nothing.
    again = await pay_by_stripe(client, customer, order["id"], await stripe.card("succeeds"))
    assert_problem(again, 409, "payment_in_progress")

    await stripe.authenticate(action, success=True)

    async def paid() -> bool:
        return (await order_of(client, customer, order["id"]))["status"] == "paid"

    await eventually(paid)
    final = await order_of(client, customer, order["id"])
    assert final["payment"]["payment_id"] == action["payment_id"]
    handled = StripeEvent.find({"about": action["payment_id"]})
    assert [e.type for e in await handled.to_list()] == ["payment_intent.succeeded"]
    assert await audit(stripe.provider) == []


async def test_3d_secure_failed_frees_the_order_for_another_card(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    order = await place_order(client, customer, (await make_product(price="12.00"), 1))
    waiting = await pay_by_stripe(
        client, customer, order["id"], await stripe.card("authentication")
    )
    action = waiting.json()["next_action"]
    await stripe.authenticate(action, success=False)
    # Stripe posts payment_intent.payment_failed here; localstripe does not, so the test does.
    intent = await stripe.intent(action["payment_id"])
    body, headers = signed(event_for(intent, "payment_intent.payment_failed", "evt_failed_3ds"))
    assert (await post_event(client, body, headers)).status_code == 200

    held = await Order.get(order["id"])
    assert held is not None and held.payment_in_progress is None
    paid = await pay_by_stripe(client, customer, order["id"], await stripe.card("succeeds"))
    assert paid.status_code == 200, paid.text
    assert paid.json()["payment"]["payment_id"] != action["payment_id"]


async def test_the_deadline_passing_while_waiting_cancels_the_payment_intent_and_the_order(
    client: AsyncClient, customer: Account, stripe: Stripe, clock: ShiftedClock
) -> None:
    product = await make_product(price="8.00", stock=5)
    order = await place_order(client, customer, (product, 2))
    waiting = await pay_by_stripe(
        client, customer, order["id"], await stripe.card("authentication")
    )
    action = waiting.json()["next_action"]
    clock.advance(PAST_THE_DEADLINE)

    read = await order_of(client, customer, order["id"])
    assert read["status"] == "cancelled"
    assert read["status_history"][-1]["reason"] == "payment_timeout"
    assert (await stripe.intent(action["payment_id"]))["status"] == "canceled"
    assert await stock_of(product) == 5


async def test_a_success_after_the_order_was_cancelled_is_refunded_and_kept_on_the_order(
    client: AsyncClient,
    customer: Account,
    stripe: Stripe,
    served: str,
    clock: ShiftedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await stripe.send_webhooks_to(served)
    product = await make_product(price="8.00", stock=5)
    order = await place_order(client, customer, (product, 1))
    waiting = await pay_by_stripe(
        client, customer, order["id"], await stripe.card("authentication")
    )
    action = waiting.json()["next_action"]

    async def unreachable(key: str) -> None:
        raise ProviderUnavailable()

    # Stripe cannot be reached at the deadline: the order is cancelled all the same ...
    monkeypatch.setattr(stripe.provider, "cancel", unreachable)
    clock.advance(PAST_THE_DEADLINE)
    assert (await order_of(client, customer, order["id"]))["status"] == "cancelled"
    monkeypatch.undo()
    # ... and then the customer completes 3-D Secure: the money goes back.
    await stripe.authenticate(action, success=True)

    async def voided() -> bool:  # refunded at Stripe, then kept on the order
        stored = await Order.get(order["id"])
        return stored is not None and bool(stored.voided_payments)

    await eventually(voided)
    [refund] = await stripe.refunds(action["payment_id"])
    assert refund["amount"] == 800
    stored = await Order.get(order["id"])
    assert stored is not None and stored.status is OrderStatus.cancelled
    [voided] = stored.voided_payments
    assert (voided.payment_id, str(voided.amount)) == (action["payment_id"], "8.00")
    assert await stock_of(product) == 5


async def test_webhooks_duplicated_reordered_unsigned_forged_or_stale_change_nothing_twice(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    order = await place_order(client, customer, (await make_product(price="3.00"), 1))
    paid = await pay_by_stripe(client, customer, order["id"], await stripe.card("succeeds"))
    intent = await stripe.intent(paid.json()["payment"]["payment_id"])
    before = await Order.get(order["id"])
    assert before is not None

    succeeded = signed(event_for(intent, "payment_intent.succeeded", "evt_1"))
    first = await post_event(client, *succeeded)
    assert first.json() == {"received": True, "duplicate": False}
    repeat = await post_event(client, *succeeded)
    assert repeat.json() == {"received": True, "duplicate": True}
    # A failure posted after the success (out of order) changes nothing.
    late_failure = signed(event_for(intent, "payment_intent.payment_failed", "evt_2"))
    assert (await post_event(client, *late_failure)).status_code == 200
    unknown = signed(event_for(intent, "charge.dispute.created", "evt_3"))
    assert (await post_event(client, *unknown)).status_code == 200
    not_ours = {"id": "pi_not_at_stripe", "object": "payment_intent", "metadata": {}}
    stray = signed(event_for(not_ours, "payment_intent.succeeded", "evt_6"))
    assert (await post_event(client, *stray)).status_code == 200

    body, _ = succeeded
    unsigned = await post_event(client, body, {})
    assert_problem(unsigned, 400, "invalid_webhook_signature")
    forged = await post_event(client, *signed(event_for(intent, "x", "evt_4"), secret="whsec_x"))
    assert_problem(forged, 400, "invalid_webhook_signature")
    stale_at = int(time.time()) - 600
    stale = await post_event(client, *signed(event_for(intent, "x", "evt_5"), at=stale_at))
    assert_problem(stale, 400, "invalid_webhook_signature")

    after = await Order.get(order["id"])
    assert after is not None
    assert (after.status, after.payment, after.version) == (
        OrderStatus.paid,
        before.payment,
        before.version,
    )
    assert after.voided_payments == []
    assert await stripe.refunds(intent["id"]) == []
    assert await StripeEvent.count() == 4  # evt_1, evt_2, evt_3, evt_6
    assert WEBHOOK_SECRET not in first.text


async def test_a_lost_webhook_is_settled_by_the_sweeper(
    client: AsyncClient,
    customer: Account,
    stripe: Stripe,
    clock: ShiftedClock,
    app: FastAPI,
    settings: AppSettings,
) -> None:
    order = await place_order(client, customer, (await make_product(price="6.50"), 1))
    waiting = await pay_by_stripe(
        client, customer, order["id"], await stripe.card("authentication")
    )
    action = waiting.json()["next_action"]
    await stripe.authenticate(action, success=True)  # its webhook goes nowhere
    hold = timedelta(seconds=settings.payment_hold_seconds)
    too_soon = await sweep_unsettled_payments(app.state.payment_providers, hold)
    assert too_soon.moved == 0

    clock.advance(settings.payment_hold_seconds + 1)
    assert (await sweep_unsettled_payments(app.state.payment_providers, hold)).moved == 1
    stored = await Order.get(order["id"])
    assert stored is not None and stored.status is OrderStatus.paid
    assert stored.payment is not None and stored.payment.payment_id == action["payment_id"]


async def test_twenty_concurrent_pays_of_one_order_make_one_successful_payment_intent(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    order = await place_order(client, customer, (await make_product(price="10.00"), 1))
    method = await stripe.card("succeeds")
    answers = await asyncio.gather(
        *(pay_by_stripe(client, customer, order["id"], method) for _ in range(20))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 409}
    intents = [
        await stripe.intent(known.payment_intent)
        for known in await StripeIntent.find({"order_id": order["id"]}).to_list()
    ]
    assert [i["status"] for i in intents] == ["succeeded"]
    stored = await Order.get(order["id"])
    assert stored is not None and stored.payment is not None
    assert stored.payment.payment_id == intents[0]["id"]


async def test_a_partial_return_is_refunded_at_stripe_for_exactly_its_amount(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    product = await make_product(price="7.25", stock=10)
    order = await place_order(client, customer, (product, 3))
    paid = await pay_by_stripe(client, customer, order["id"], await stripe.card("succeeds"))
    payment_intent = paid.json()["payment"]["payment_id"]

    returned = await request_return(client, customer, order["id"], (product, 1))
    assert returned.status_code == 201, returned.text
    assert returned.json()["status"] == "refunded"
    [refund] = await stripe.refunds(payment_intent)
    assert refund["amount"] == 725
    assert await StripeRefund.find({"payment_intent": payment_intent}).count() == 1
    status = await client.get(f"/order/{order['id']}/return_status/", headers=customer.headers)
    assert status.json()["refunded_total"] == "7.25"
    assert (await order_of(client, customer, order["id"]))["status"] == "partially_returned"
    assert await audit(stripe.provider) == []


async def test_stripe_is_refused_like_any_unknown_provider_without_its_key(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    refused = await pay(client, customer, order["id"], "pm_card_visa", provider="stripe")
    assert assert_problem(refused, 422, "validation_error")["errors"][0]["field"] == "provider"
    elsewhere = await pay(client, customer, order["id"], "pm_card_visa", provider="paypal")
    assert_problem(elsewhere, 422, "validation_error")
    webhook = await client.post("/payments/stripe/webhook", content=b"{}")
    assert_problem(webhook, 404, "stripe_not_configured")
    assert (await order_of(client, customer, order["id"]))["status"] == "pending_payment"


async def test_the_books_balance_with_stripe_paid_orders_among_the_others(
    client: AsyncClient, app: FastAPI, stripe: Stripe
) -> None:
    products = [await make_product(price=price, stock=STOCK) for price in ("9.99", "0.10")]
    customers = [await make_user(app) for _ in range(16)]
    by_stripe = ("stripe", await stripe.card("succeeds"), await stripe.card("declined"))
    await asyncio.gather(
        *(
            shopper(client, c, products, seed, by_stripe if seed % 2 else SIMULATED)
            for seed, c in enumerate(customers)
        )
    )
    orders = await Order.find_all().to_list()
    paid = {o.payment.provider for o in orders if o.payment is not None}
    assert paid == {"mock", "stripe"}, paid  # both providers took money
    assert await audit(stripe.provider) == []
    assert await audit() != []  # without Stripe's side, its orders have no charge


async def test_an_attempt_stripe_cannot_be_asked_about_does_not_hold_up_the_others(
    client: AsyncClient,
    customer: Account,
    stripe: Stripe,
    clock: ShiftedClock,
    app: FastAPI,
    settings: AppSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    product = await make_product(price="6.50", stock=5)
    orders = [await place_order(client, customer, (product, 1)) for _ in range(2)]
    for order in orders:
        waiting = await pay_by_stripe(
            client, customer, order["id"], await stripe.card("authentication")
        )
        await stripe.authenticate(waiting.json()["next_action"], success=True)  # no webhook
    real_retrieve = stripe.provider.retrieve

    async def unreachable_for_the_first(key: str) -> Any:
        if orders[0]["id"] in key:
            raise ProviderUnavailable()
        return await real_retrieve(key)

    monkeypatch.setattr(stripe.provider, "retrieve", unreachable_for_the_first)
    clock.advance(settings.payment_hold_seconds + 1)
    hold = timedelta(seconds=settings.payment_hold_seconds)
    assert (await sweep_unsettled_payments(app.state.payment_providers, hold)).moved == 1
    first, second = [await Order.get(order["id"]) for order in orders]
    assert first is not None and first.status is OrderStatus.pending_payment
    assert first.payment_in_progress is not None  # asked again at the next sweep
    assert second is not None and second.status is OrderStatus.paid


async def test_payments_made_through_stripe_wait_for_it_once_its_key_is_removed(
    client: AsyncClient,
    customer: Account,
    stripe: Stripe,
    clock: ShiftedClock,
    app: FastAPI,
    settings: AppSettings,
) -> None:
    """The service restarted without its Stripe key: what needs Stripe waits for it, as when
    Stripe cannot be reached, and nothing else does (no 500, no stuck sweeper)."""
    product = await make_product(price="4.00", stock=10)
    paid = await place_order(client, customer, (product, 2))
    card = await stripe.card("succeeds")
    payment_intent = (await pay_by_stripe(client, customer, paid["id"], card)).json()["payment"][
        "payment_id"
    ]
    read, swept = [await place_order(client, customer, (product, 3)) for _ in range(2)]
    for order in (read, swept):
        await wait_for_customer(client, customer, stripe, order["id"])
    with_stripe = app.state.payment_providers
    app.state.payment_providers = {k: v for k, v in with_stripe.items() if k != "stripe"}
    hold = timedelta(seconds=settings.payment_hold_seconds)

    returned = await request_return(client, customer, paid["id"], (product, 1))
    assert returned.status_code == 201, returned.text
    assert returned.json()["status"] == "approved"  # taken; its refund waits for Stripe
    clock.advance(PAST_THE_DEADLINE)
    cancelled = await order_of(client, customer, read["id"])
    assert (cancelled["status"], cancelled["status_history"][-1]["reason"]) == (
        "cancelled",
        "payment_timeout",
    )
    await Sweeper(app.state.payment_providers, hold).sweep_once()
    stored = await Order.get(swept["id"])
    assert stored is not None and stored.status is OrderStatus.cancelled
    assert await stock_of(product) == 8  # both waiting orders' units are back
    assert await stripe.refunds(payment_intent) == []

    app.state.payment_providers = with_stripe  # the key is back
    await Sweeper(app.state.payment_providers, hold).sweep_once()
    [refund] = await stripe.refunds(payment_intent)
    assert refund["amount"] == 400
    status = await client.get(f"/order/{paid['id']}/return_status/", headers=customer.headers)
    assert status.json()["returns"][0]["status"] == "refunded"


async def test_a_free_order_and_a_free_line_go_through_stripe_without_a_call_for_nothing(
    client: AsyncClient, customer: Account, stripe: Stripe
) -> None:
    """Stripe takes no charge below 0.50 and no refund of 0: nothing to charge or give back
    is not sent to it, and the books balance with what it has."""
    paid_for = await make_product(price="6.00", stock=5)
    gift = await make_product(price="2.00", stock=5)
    await make_discount(
        scope=DiscountScope.product, kind=DiscountKind.percent, value="100", product_ids=[gift.id]
    )
    card = await stripe.card("succeeds")
    free = await place_order(client, customer, (gift, 1))
    assert free["total"] == "0.00"
    paid = await pay_by_stripe(client, customer, free["id"], card)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["payment"]["amount"]) == ("paid", "0.00")
    assert await StripeIntent.count() == 0

    order = await place_order(client, customer, (paid_for, 1), (gift, 1))
    intent = (await pay_by_stripe(client, customer, order["id"], card)).json()["payment"]
    assert intent["amount"] == "6.00"
    returned = await request_return(client, customer, order["id"], (gift, 1))
    assert (returned.json()["status"], returned.json()["refund_amount"]) == ("refunded", "0.00")
    assert await stripe.refunds(intent["payment_id"]) == []
    assert await audit(stripe.provider) == []
