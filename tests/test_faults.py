"""Fault injection with mongod's ``failCommand`` fail point: what a database failure part
way through a use case leaves behind. Needs a server with test commands enabled (the
embedded one is started so; for mongod, ``--setParameter enableTestCommands=1``)."""

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pymongo.errors import AutoReconnect, OperationFailure

from shop.cart.models import Cart, GuestCart
from shop.idempotency import FORGET_TIMEOUT_SECONDS, IdempotencyRecord, RecordState
from shop.kit.clock import ShiftedClock
from shop.orders.models import Order, OrderStatus, PendingOrder
from shop.payments.mock import MockProvider, ProviderCharge, ProviderRefund
from shop.payments.provider import Charge
from shop.returns.models import ReturnRequest, ReturnStatus
from shop.returns.service import REFUND_RETRY_AFTER, retry_refunds
from tests.cart.test_guest import guest_add, merge, quantities, start_guest_cart
from tests.factories import (
    Account,
    add_to_cart,
    assert_problem,
    make_paid_order,
    make_product,
    make_user,
    pay,
    paying_through,
    place_order,
    request_return,
    stock_of,
)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """As a real server answers: an unexpected error is a 500 response, not an exception."""
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://shop.test") as http:
        yield http


@pytest.fixture(autouse=True)
async def _fail_points_available(app: FastAPI) -> None:
    """Managed servers (Atlas, most hosted replica sets) have no test commands: skip there,
    saying why, rather than fail."""
    admin = Order.get_pymongo_collection().database.client.admin
    try:
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    except OperationFailure as refused:
        if refused.code == COMMAND_NOT_FOUND:
            pytest.skip("the server has no failCommand: start mongod with enableTestCommands=1")
        raise


COMMAND_NOT_FOUND = 59


@asynccontextmanager
async def fail_point(commands: list[str], mode: Any, **data: Any) -> AsyncIterator[None]:
    admin = Order.get_pymongo_collection().database.client.admin
    await admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": mode,
            "data": {"failCommands": commands, **data},
        }
    )
    try:
        yield
    finally:
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def test_a_failure_inside_checkout_changes_nothing(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    await add_to_cart(client, customer, product, 2)
    # The order's insert passes, the payment window's insert fails: all is rolled back.
    async with fail_point(["insert"], {"skip": 1}, errorCode=2):
        failed = await client.post("/order/create/", headers=customer.headers)
    assert failed.status_code == 500
    assert failed.json()["code"] == "internal_error"
    assert await stock_of(product) == 5
    cart = await Cart.find_one({"user_id": customer.id})
    assert cart is not None
    assert [(i.product_id, i.quantity) for i in cart.items] == [(product.id, 2)]
    assert await Order.count() == 0
    assert await PendingOrder.count() == 0


async def test_checkout_retries_a_transient_error_and_reserves_once(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    await add_to_cart(client, customer, product, 2)
    async with fail_point(
        ["insert"], {"times": 1}, errorCode=112, errorLabels=["TransientTransactionError"]
    ):
        created = await client.post("/order/create/", headers=customer.headers)
    assert created.status_code == 201, created.text
    assert await stock_of(product) == 3
    assert await Order.count() == 1


@pytest.mark.parametrize(
    "updates_before_failure",
    [
        pytest.param(2, id="failure-while-the-provider-refunds"),
        pytest.param(3, id="failure-recording-the-refund"),
    ],
)
async def test_a_failure_after_approval_is_completed_later_without_refunding_twice(
    client: AsyncClient,
    app: FastAPI,
    updates_before_failure: int,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    product = await make_product(price="6.00", stock=5)
    order = await make_paid_order(client, customer, (product, 2))
    key = str(uuid.uuid4())
    # Updates in order: the return is recorded on the order (1), approved (2), the provider
    # books the refund against the charge (3), the refund is recorded on the return (4).
    async with fail_point(["update"], {"skip": updates_before_failure}, errorCode=2):
        failed = await request_return(client, customer, order["id"], (product, 2), key=key)
    assert failed.status_code == 500
    pending = await ReturnRequest.find_one()
    assert pending is not None
    assert pending.status is ReturnStatus.approved
    # The provider books a refund whole or not at all.
    refunded = updates_before_failure == 3
    assert await ProviderRefund.count() == int(refunded)
    charge = await ProviderCharge.find_one()
    assert charge is not None
    assert charge.amount_refunded == (Decimal("12.00") if refunded else 0)
    assert await stock_of(product) == 3
    paid = await Order.get(order["id"])
    assert paid is not None
    assert (paid.status, paid.refunded_total) == (OrderStatus.paid, 0)

    clock.advance(REFUND_RETRY_AFTER.total_seconds())
    assert (await retry_refunds(app.state.payment_providers)).moved == 1
    returned = await Order.get(order["id"])
    assert returned is not None
    assert returned.status is OrderStatus.returned
    assert str(returned.refunded_total) == "12.00"
    assert [r.amount for r in await ProviderRefund.find_all().to_list()] == [Decimal("12.00")]
    charge = await ProviderCharge.find_one()
    assert charge is not None
    assert charge.amount_refunded == Decimal("12.00")
    assert await stock_of(product) == 5
    # The failed request forgot its key: retrying it finds the units already returned.
    again = await request_return(client, customer, order["id"], (product, 2), key=key)
    assert again.json()["code"] == "return_not_allowed"


async def test_a_failure_part_way_through_a_merge_loses_no_guest_line(
    client: AsyncClient, app: FastAPI
) -> None:
    """The guest's cart ends only with its lines in the customer's: a merge that fails
    after the guest's cart was taken leaves it whole, and the next merge brings every line."""
    first, second = await make_product(stock=10), await make_product(stock=10)
    token = await start_guest_cart(client, first, 2)
    assert (await guest_add(client, second, 3, token)).status_code == 200
    customer = await make_user(app)
    async with fail_point(["update"], {"times": 1}, errorCode=2):
        failed = await merge(client, customer, token)
    assert failed.status_code == 500
    assert await quantities(customer) == {}
    (left,) = await GuestCart.find_all().to_list()
    assert [(i.product_id, i.quantity) for i in left.items] == [(first.id, 2), (second.id, 3)]

    merged = await merge(client, customer, token)
    assert merged.status_code == 200, merged.text
    assert await quantities(customer) == {str(first.id): 2, str(second.id): 3}
    assert await GuestCart.find_all().count() == 0


class _ConnectionLostProvider(MockProvider):
    """The simulated provider, whose connection to the database closes under the charge."""

    async def charge(self, **_: Any) -> Charge:
        raise AutoReconnect("127.0.0.1:27017: connection closed")


async def test_a_payment_cut_off_by_the_database_is_answered_without_waiting_on_its_key(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    """A request that failed on the database gives its Idempotency-Key back within
    ``FORGET_TIMEOUT_SECONDS``: it does not wait out the operation timeout a second time for
    a database that is likely still gone. The key then stays held until its lease ends."""
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 1))
    key = uuid.uuid4().hex
    # The key's release stalls for 3 s, as behind a server that stopped answering.
    stall = {"blockConnection": True, "blockTimeMS": 3000, "errorCode": 2}
    with paying_through(app, {**app.state.payment_providers, "mock": _ConnectionLostProvider()}):
        async with fail_point(["delete"], {"times": 1}, **stall):
            started = time.monotonic()
            failed = await pay(client, customer, order["id"], key=key)
            took = time.monotonic() - started
    assert_problem(failed, 503, "database_unavailable")  # what made it fail, not the release
    assert took < FORGET_TIMEOUT_SECONDS + 0.5, took
    record = await IdempotencyRecord.find_one({"key": key})
    assert record is not None
    assert record.state is RecordState.running
    assert_problem(await pay(client, customer, order["id"], key=key), 409, "idempotency_key_in_use")
    assert await ProviderCharge.count() == 0
    unpaid = await Order.get(order["id"])
    assert unpaid is not None
    assert unpaid.status is OrderStatus.pending_payment
