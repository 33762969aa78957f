import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

from beanie import PydanticObjectId
from bson import ObjectId
from fastapi import FastAPI
from httpx import AsyncClient

from shop.audit import audit
from shop.discounts.models import DiscountKind, DiscountScope
from shop.idempotency import RUNNING_LEASE, IdempotencyRecord, fingerprint
from shop.kit.clock import utcnow
from shop.orders.models import Order, OrderStatus, PendingOrder
from shop.orders.schemas import PayRequest
from shop.payments.mock import ProviderCharge, ProviderRefund
from shop.payments.provider import ChargeStatus
from tests.factories import (
    Account,
    assert_problem,
    charges_for,
    make_discount,
    make_product,
    make_user,
    pay,
    place_order,
    request_return,
    stock_of,
)

HOLD = timedelta(seconds=30)


async def test_paying_marks_the_order_paid_with_one_charge(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(price="19.99"), 2))
    response = await pay(client, customer, order["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "paid"
    assert body["paid_at"] is not None
    assert [h["status"] for h in body["status_history"]] == ["pending_payment", "paid"]

    charges = await charges_for(order["id"])
    assert len(charges) == 1
    assert charges[0].status is ChargeStatus.succeeded
    assert charges[0].amount == Decimal("39.98")
    assert body["payment"] == {
        "provider": "mock",
        "payment_id": charges[0].payment_id,
        "amount": "39.98",
        "method": "pm_card_visa",
        "paid_at": body["paid_at"],
    }
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.paid
    assert await PendingOrder.get(order["id"]) is None


async def test_fifty_concurrent_pays_charge_once(client: AsyncClient, customer: Account) -> None:
    order = await place_order(client, customer, (await make_product(price="5.00"), 1))
    responses = await asyncio.gather(*(pay(client, customer, order["id"]) for _ in range(50)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 1, [r.json() for r in responses if r.status_code != 409]
    assert codes.count(409) == 49, [r.json() for r in responses if r.status_code != 409]
    assert {r.json()["code"] for r in responses if r.status_code == 409} <= {
        "payment_in_progress",
        "order_already_paid",
    }
    assert len(await charges_for(order["id"])) == 1
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.paid


async def test_a_replayed_key_returns_the_first_response_and_charges_nothing(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    key = str(uuid.uuid4())
    first = await pay(client, customer, order["id"], key=key)
    again = await pay(client, customer, order["id"], key=key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(await charges_for(order["id"])) == 1

    other_body = await pay(client, customer, order["id"], method="pm_card_mastercard", key=key)
    assert_problem(other_body, 422, "idempotency_key_reused")
    assert len(await charges_for(order["id"])) == 1


async def test_concurrent_requests_with_one_key_run_once(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    key = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(pay(client, customer, order["id"], key=key) for _ in range(10))
    )
    ok = [r for r in responses if r.status_code == 200]
    assert ok
    assert all(r.json() == ok[0].json() for r in ok)
    assert all(
        r.json()["code"] == "idempotency_key_in_use" for r in responses if r.status_code != 200
    )
    assert len(await charges_for(order["id"])) == 1


async def test_keys_belong_to_their_user(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product()
    ann_order = await place_order(client, ann, (product, 1))
    bob_order = await place_order(client, bob, (product, 1))
    key = str(uuid.uuid4())
    assert (await pay(client, ann, ann_order["id"], key=key)).status_code == 200
    assert (await pay(client, bob, bob_order["id"], key=key)).status_code == 200
    assert len(await charges_for(bob_order["id"])) == 1


async def test_the_idempotency_key_is_required(client: AsyncClient, customer: Account) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    response = await client.post(
        "/order/pay/",
        json={"order_id": order["id"], "provider": "mock", "payment_method": "pm_card_visa"},
        headers=customer.headers,
    )
    assert_problem(response, 400, "idempotency_key_missing")
    assert await charges_for(order["id"]) == []


async def test_a_declined_order_can_be_paid_with_another_method(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    declined = await pay(client, customer, order["id"], method="pm_card_chargeDeclined")
    assert_problem(declined, 402, "payment_declined")
    broke = await pay(
        client, customer, order["id"], method="pm_card_chargeDeclinedInsufficientFunds"
    )
    assert_problem(broke, 402, "insufficient_funds")
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.pending_payment
    assert stored.payment_in_progress is None

    paid = await pay(client, customer, order["id"], method="pm_card_mastercard")
    assert paid.json()["status"] == "paid"
    statuses = sorted(c.status for c in await charges_for(order["id"]))
    assert statuses == [ChargeStatus.failed, ChargeStatus.failed, ChargeStatus.succeeded]


async def test_paying_a_paid_order_is_a_conflict(client: AsyncClient, customer: Account) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    await pay(client, customer, order["id"])
    assert_problem(await pay(client, customer, order["id"]), 409, "order_already_paid")
    assert len(await charges_for(order["id"])) == 1


async def test_unknown_or_foreign_orders_cannot_be_paid(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    order = await place_order(client, ann, (await make_product(), 1))
    assert_problem(await pay(client, bob, order["id"]), 404, "order_not_found")
    assert_problem(await pay(client, ann, "64b7f0c2a1b2c3d4e5f60718"), 404, "order_not_found")
    assert await charges_for(order["id"]) == []


async def test_payment_input_is_validated(client: AsyncClient, customer: Account) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    assert_problem(
        await pay(client, customer, order["id"], method="pm_card_bogus"),
        422,
        "unknown_payment_method",
    )
    for body in [
        {"order_id": order["id"], "provider": "paypal", "payment_method": "pm_card_visa"},
        {"order_id": "xyz", "provider": "mock", "payment_method": "pm_card_visa"},
        {"order_id": order["id"], "provider": "mock"},
    ]:
        response = await client.post(
            "/order/pay/", json=body, headers={**customer.headers, "Idempotency-Key": "k"}
        )
        assert_problem(response, 422, "validation_error")
    assert await ProviderCharge.count() == 0


async def test_a_free_order_is_paid_and_returned_without_the_provider(
    client: AsyncClient, customer: Account
) -> None:
    """A fully discounted order: nothing to charge, so no charge is made (Stripe takes none
    below 0.50); returning it gives back nothing, through no provider either."""
    await make_discount(scope=DiscountScope.cart, kind=DiscountKind.percent, value="100")
    product = await make_product(price="3.00", stock=5)
    order = await place_order(client, customer, (product, 1))
    assert order["total"] == "0.00"
    paid = await pay(client, customer, order["id"])
    assert paid.status_code == 200, paid.text
    payment = paid.json()["payment"]
    assert paid.json()["status"] == "paid"
    assert (payment["amount"], payment["provider"]) == ("0.00", "mock")
    assert await charges_for(order["id"]) == []
    returned = await request_return(client, customer, order["id"], (product, 1))
    assert (returned.json()["status"], returned.json()["refund_amount"]) == ("refunded", "0.00")
    assert await ProviderRefund.count() == 0
    stored = await Order.get(order["id"])
    assert stored is not None and stored.status is OrderStatus.returned
    assert await stock_of(product) == 5
    assert await audit() == []


async def test_a_key_left_running_by_a_stopped_process_is_taken_over_after_its_lease(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    request = PayRequest(order_id=order["id"], provider="mock", payment_method="pm_card_visa")
    now = utcnow()
    stuck = IdempotencyRecord(
        user_id=customer.id,
        operation="order.pay",
        key="stuck-key",
        fingerprint=fingerprint("order.pay", request),
        started_at=now,
        expires_at=now + timedelta(days=1),
    )
    await stuck.insert()
    assert_problem(
        await pay(client, customer, order["id"], key="stuck-key"), 409, "idempotency_key_in_use"
    )

    await stuck.set({IdempotencyRecord.started_at: now - RUNNING_LEASE - timedelta(seconds=1)})
    taken_over = await pay(client, customer, order["id"], key="stuck-key")
    assert taken_over.status_code == 200, taken_over.text
    assert taken_over.json()["status"] == "paid"
    replay = await pay(client, customer, order["id"], key="stuck-key")
    assert replay.json() == taken_over.json()
    assert len(await charges_for(order["id"])) == 1


async def test_pays_of_orders_that_do_not_exist_keep_no_idempotency_keys(
    client: AsyncClient, customer: Account
) -> None:
    for _ in range(20):
        assert_problem(await pay(client, customer, str(ObjectId())), 404, "order_not_found")
    assert await IdempotencyRecord.count() == 0
    order = await place_order(client, customer, (await make_product(), 1))
    assert (await pay(client, customer, order["id"], key="k1")).status_code == 200
    assert_problem(await pay(client, customer, order["id"], key="k2"), 409, "order_already_paid")
    assert await IdempotencyRecord.count() == 2  # outcomes on a real order are kept


async def test_a_retry_after_a_crash_gets_the_success_its_charge_achieved(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    """The request with key K claimed the order and was charged; then its process died.
    Once its key's lease and its attempt's hold have run out, K's retry answers 200 with the
    paid order, as if the first answer had arrived; another key is told the order is paid."""
    order = await place_order(client, customer, (await make_product(), 1))
    request = PayRequest(order_id=order["id"], provider="mock", payment_method="pm_card_visa")
    past = utcnow() - RUNNING_LEASE - timedelta(seconds=1)
    await IdempotencyRecord(
        user_id=customer.id,
        operation="order.pay",
        key="K",
        fingerprint=fingerprint("order.pay", request),
        started_at=past,
        expires_at=past + timedelta(days=1),
    ).insert()
    claimed = await Order.claim_for_payment(
        PydanticObjectId(order["id"]), customer.id, "mock", "pm_card_visa", past, HOLD, "K"
    )
    assert claimed is not None and claimed.payment_in_progress is not None
    await app.state.payment_providers["mock"].charge(
        key=claimed.payment_in_progress.charge_key(claimed.id),
        amount=claimed.total,
        currency="EUR",
        method="pm_card_visa",
    )  # ... and the process died here

    retried = await pay(client, customer, order["id"], key="K")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "paid"
    assert_problem(await pay(client, customer, order["id"], key="other"), 409, "order_already_paid")
    assert len(await charges_for(order["id"])) == 1
    assert (await pay(client, customer, order["id"], key="K")).json() == retried.json()
