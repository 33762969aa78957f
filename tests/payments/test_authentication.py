"""The simulated provider's 3-D Secure: a payment that waits for the customer (202), finished
by the development endpoint that stands in for the browser."""

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import SecretStr, ValidationError

from shop.background import Sweeper
from shop.kit.clock import ShiftedClock
from shop.kit.config import AppSettings
from shop.main import payment_providers
from shop.orders.models import Order, OrderStatus
from shop.orders.service import sweep_unsettled_payments
from shop.payments.mock import MockProvider
from shop.payments.provider import ChargeStatus
from tests.factories import (
    Account,
    assert_problem,
    charges_for,
    make_product,
    pay,
    paying_through,
    place_order,
    stock_of,
)

NEEDS_AUTHENTICATION = "pm_card_authenticationRequired"


async def authenticate(
    client: AsyncClient, action: dict[str, Any], *, success: bool, secret: str | None = None
) -> Any:
    return await client.post(
        "/payments/mock/authenticate",
        json={
            "payment_id": action["payment_id"],
            "client_secret": secret or action["client_secret"],
            "success": success,
        },
    )


async def test_a_payment_that_needs_authentication_waits_then_pays_once_completed(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(price="4.50"), 2))
    waiting = await pay(client, customer, order["id"], NEEDS_AUTHENTICATION, key="k-3ds")
    assert waiting.status_code == 202, waiting.text
    action = waiting.json()["next_action"]
    assert action["type"] == "authenticate"
    assert waiting.json()["status"] == "pending_payment"
    replay = await pay(client, customer, order["id"], NEEDS_AUTHENTICATION, key="k-3ds")
    assert (replay.status_code, replay.json()) == (202, waiting.json())
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = await pay(client, customer, order["id"], "pm_card_visa")
    assert_problem(other, 409, "payment_in_progress")

    done = await authenticate(client, action, success=True)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "paid"
    assert done.json()["payment"]["payment_id"] == action["payment_id"]
    [charge] = await charges_for(order["id"])
    assert (charge.status, str(charge.amount)) == (ChargeStatus.succeeded, "9.00")
    again = await authenticate(client, action, success=True)  # a second click changes nothing
    assert again.json()["status"] == "paid"
    assert len(await charges_for(order["id"])) == 1


async def test_failed_authentication_leaves_the_order_payable_with_another_method(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(price="4.50"), 1))
    action = (await pay(client, customer, order["id"], NEEDS_AUTHENTICATION)).json()["next_action"]
    failed = await authenticate(client, action, success=False)
    assert failed.json()["status"] == "pending_payment"
    stored = await Order.get(order["id"])
    assert stored is not None and stored.payment_in_progress is None

    paid = await pay(client, customer, order["id"], "pm_card_visa")
    assert paid.status_code == 200, paid.text
    assert paid.json()["payment"]["payment_id"] != action["payment_id"]


async def test_a_wrong_client_secret_finishes_nothing(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    action = (await pay(client, customer, order["id"], NEEDS_AUTHENTICATION)).json()["next_action"]
    forged = await authenticate(client, action, success=True, secret="ch_x_secret_guess")
    assert_problem(forged, 404, "payment_not_found")
    [charge] = await charges_for(order["id"])
    assert charge.status is ChargeStatus.requires_action


async def test_the_deadline_cancels_a_payment_still_waiting_and_its_order(
    client: AsyncClient, customer: Account, clock: ShiftedClock, settings: AppSettings
) -> None:
    settings.payment_timeout_seconds = 600
    product = await make_product(stock=3)
    order = await place_order(client, customer, (product, 3))
    action = (await pay(client, customer, order["id"], NEEDS_AUTHENTICATION)).json()["next_action"]
    clock.advance(601)

    read = await client.get(f"/order/{order['id']}/", headers=customer.headers)
    assert read.json()["status"] == "cancelled"
    [charge] = await charges_for(order["id"])
    assert (charge.status, charge.failure_code) == (ChargeStatus.failed, "canceled")
    late = await authenticate(client, action, success=True)  # too late: nothing to finish
    assert late.json()["status"] == "cancelled"
    assert await stock_of(product) == 3
    stored = await Order.get(order["id"])
    assert stored is not None and stored.status is OrderStatus.cancelled


def test_the_simulated_provider_is_offered_in_development_only_unless_stripe_is() -> None:
    key = SecretStr("k" * 40)
    development = AppSettings(environment="development", stripe_secret_key=None)
    assert set(payment_providers(development)) == {"mock"}
    off = development.model_copy(update={"simulated_payments": False})
    assert payment_providers(off) == {}
    production = AppSettings(environment="production", secret_key=key)
    assert payment_providers(production) == {}
    stripe = SecretStr("sk_test_shop")
    with_stripe = AppSettings(environment="production", secret_key=key, stripe_secret_key=stripe)
    assert set(payment_providers(with_stripe)) == {"stripe"}
    # Taking real payments, a service offers the simulated one only when asked to.
    developing = development.model_copy(update={"stripe_secret_key": stripe})
    assert set(payment_providers(developing)) == {"stripe"}
    both = developing.model_copy(update={"simulated_payments": True})
    assert set(payment_providers(both)) == {"mock", "stripe"}
    with pytest.raises(ValidationError, match="SHOP_SIMULATED_PAYMENTS"):
        AppSettings(environment="production", secret_key=key, simulated_payments=True)


async def test_in_production_no_order_is_paid_by_the_simulated_provider(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    """A customer who names the simulated provider in production is refused as for any
    provider the service does not offer, and its 3-D Secure stand-in is not served."""
    order = await place_order(client, customer, (await make_product(price="4.50"), 2))
    waiting = await pay(client, customer, order["id"], NEEDS_AUTHENTICATION)
    assert waiting.status_code == 202, waiting.text
    production = AppSettings(environment="production", secret_key=SecretStr("k" * 40))
    with paying_through(app, payment_providers(production)):
        refused = await pay(client, customer, order["id"], "pm_card_visa")
        problem = assert_problem(refused, 422, "validation_error")
        assert problem["errors"][0]["field"] == "provider"
        finished = await authenticate(client, waiting.json()["next_action"], success=True)
        assert_problem(finished, 404, "payment_not_found")
    stored = await Order.get(order["id"])
    assert stored is not None and stored.status is OrderStatus.pending_payment
    assert stored.payment is None
    [charge] = await charges_for(order["id"])
    assert charge.status is ChargeStatus.requires_action


async def test_customers_still_authenticating_keep_no_lost_payment_from_being_asked_about(
    client: AsyncClient,
    app: FastAPI,
    customer: Account,
    clock: ShiftedClock,
    settings: AppSettings,
) -> None:
    """The sweep asks about one batch of attempts at a time, the oldest first, and the next
    sweep goes on from where it ended: a success whose news was lost, behind a full batch of
    customers still in 3-D Secure, is found at the next sweep, not at its order's deadline."""
    settings.payment_timeout_seconds = 600
    mock: MockProvider = app.state.payment_providers["mock"]
    actions = []
    for _ in range(3):
        order = await place_order(client, customer, (await make_product(), 1))
        waiting = await pay(client, customer, order["id"], NEEDS_AUTHENTICATION)
        actions.append((order["id"], waiting.json()["next_action"]))
        clock.advance(1)  # each attempt starts at a time of its own
    lost_id, lost = actions[-1]
    await mock.authenticate(lost["payment_id"], lost["client_secret"], True)  # no news of it
    clock.advance(settings.payment_hold_seconds)
    hold = timedelta(seconds=settings.payment_hold_seconds)

    alone = await sweep_unsettled_payments(app.state.payment_providers, hold, batch=2)
    assert alone.moved == 0  # the oldest two: customers still authenticating
    assert alone == await sweep_unsettled_payments(app.state.payment_providers, hold, batch=2)

    sweeper = Sweeper(app.state.payment_providers, hold, batch=2)
    await sweeper.sweep_once()  # the same two
    unheard = await Order.get(lost_id)
    assert unheard is not None and unheard.status is OrderStatus.pending_payment
    await sweeper.sweep_once()  # the next: the lost success pays its order
    stored = await Order.get(lost_id)
    assert stored is not None and stored.status is OrderStatus.paid
    for order_id, _ in actions[:-1]:
        waiting_order = await Order.get(order_id)
        assert waiting_order is not None and waiting_order.payment_in_progress is not None

    oldest_id, oldest = actions[0]  # its customer finishes now, and this news is lost too
    await mock.authenticate(oldest["payment_id"], oldest["client_secret"], True)
    await sweeper.sweep_once()  # past the end, the walk starts again from the oldest
    stored = await Order.get(oldest_id)
    assert stored is not None and stored.status is OrderStatus.paid
