import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from beanie import PydanticObjectId
from fastapi import FastAPI
from httpx import AsyncClient
from prometheus_client import REGISTRY

from shop import background
from shop.catalog.models import Product
from shop.discounts.models import DiscountKind, DiscountScope
from shop.kit.clock import ShiftedClock
from shop.kit.config import AppSettings
from shop.orders.models import Order, OrderStatus
from shop.payments.mock import MockProvider, ProviderRefund
from shop.payments.provider import ProviderUnavailable, RefundFailed
from shop.returns.models import ReturnRequest, ReturnStatus
from shop.returns.service import REFUND_RETRY_AFTER, complete_refund, retry_refunds
from tests.factories import (
    Account,
    add_to_cart,
    apply_code,
    assert_problem,
    make_discount,
    make_paid_order,
    make_product,
    make_user,
    place_order,
    refunds_for,
    request_return,
    stock_of,
)


@pytest.fixture
def provider(app: FastAPI) -> Iterator[MockProvider]:
    mock: MockProvider = app.state.payment_providers["mock"]
    yield mock
    mock.refunds_unavailable = False


async def test_a_full_return_refunds_what_was_paid_and_restocks(
    client: AsyncClient, customer: Account
) -> None:
    mug = await make_product(price="12.50", stock=10)
    pen = await make_product(price="0.10", stock=10)
    order = await make_paid_order(client, customer, (mug, 2), (pen, 3))
    assert (await stock_of(mug), await stock_of(pen)) == (8, 7)

    response = await request_return(client, customer, order["id"], (mug, 2), (pen, 3))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "refunded"
    assert created["refund_amount"] == order["total"] == "25.30"
    assert [h["status"] for h in created["status_history"]] == ["requested", "approved", "refunded"]

    assert (await stock_of(mug), await stock_of(pen)) == (10, 10)
    refunds = await refunds_for(order)
    assert [r.amount for r in refunds] == [Decimal("25.30")]
    stored = await Order.get(order["id"])
    assert stored is not None
    assert (stored.status, stored.refunded_total) == (OrderStatus.returned, Decimal("25.30"))

    status = (
        await client.get(f"/order/{order['id']}/return_status/", headers=customer.headers)
    ).json()
    assert (status["order_status"], status["refunded_total"]) == ("returned", "25.30")
    assert [r["id"] for r in status["returns"]] == [created["id"]]


async def test_two_partial_returns_add_up_to_what_was_paid_with_a_cart_discount(
    client: AsyncClient, customer: Account
) -> None:
    item = await make_product(price="33.33", stock=10)
    await make_discount(scope=DiscountScope.cart, kind=DiscountKind.percent, value="10", code="TEN")
    await add_to_cart(client, customer, item, 3)
    await apply_code(client, customer, "TEN")
    order = await make_paid_order(client, customer)
    assert order["total"] == "89.99"

    first = (await request_return(client, customer, order["id"], (item, 1))).json()
    assert (first["status"], first["refund_amount"]) == ("refunded", "30.00")
    middle = (await client.get(f"/order/{order['id']}/", headers=customer.headers)).json()
    assert middle["status"] == "partially_returned"

    second = (await request_return(client, customer, order["id"], (item, 2))).json()
    assert second["refund_amount"] == "59.99"
    final = (await client.get(f"/order/{order['id']}/", headers=customer.headers)).json()
    assert [h["status"] for h in final["status_history"]] == [
        "pending_payment",
        "paid",
        "partially_returned",
        "returned",
    ]
    assert sum(r.amount for r in await refunds_for(order)) == Decimal("89.99")
    assert await stock_of(item) == 10


async def test_returns_of_unpaid_cancelled_or_returned_orders_are_refused(
    client: AsyncClient, settings: AppSettings, clock: ShiftedClock, customer: Account
) -> None:
    product = await make_product(stock=20)
    unpaid = await place_order(client, customer, (product, 1))
    assert_problem(
        await request_return(client, customer, unpaid["id"], (product, 1)),
        409,
        "return_not_allowed",
    )
    returned = await make_paid_order(client, customer, (product, 1))
    await request_return(client, customer, returned["id"], (product, 1))
    assert_problem(
        await request_return(client, customer, returned["id"], (product, 1)),
        409,
        "return_not_allowed",
    )
    settings.payment_timeout_seconds = 1
    doomed = await place_order(client, customer, (product, 1))
    clock.advance(1.1)
    assert_problem(
        await request_return(client, customer, doomed["id"], (product, 1)),
        409,
        "return_not_allowed",
    )
    assert await ReturnRequest.count() == 1


async def test_other_users_orders_cannot_be_returned(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product()
    order = await make_paid_order(client, ann, (product, 1))
    assert_problem(
        await request_return(client, bob, order["id"], (product, 1)), 404, "order_not_found"
    )
    assert_problem(
        await client.get(f"/order/{order['id']}/return_status/", headers=bob.headers),
        404,
        "order_not_found",
    )
    assert await ReturnRequest.count() == 0


async def test_quantities_are_checked(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=10)
    stranger = await make_product()
    order = await make_paid_order(client, customer, (product, 2))
    body = assert_problem(
        await request_return(client, customer, order["id"], (product, 3)),
        409,
        "return_quantity_exceeded",
    )
    assert body["products"] == [str(product.id)]
    assert_problem(
        await request_return(client, customer, order["id"], (stranger, 1)),
        422,
        "product_not_in_order",
    )
    for items in [[(product, 0)], [], [(product, 1), (product, 1)]]:
        response = await request_return(client, customer, order["id"], *items)
        assert_problem(response, 422, "validation_error")
    bad_reason = await request_return(client, customer, order["id"], (product, 1), reason="meh")
    assert_problem(bad_reason, 422, "validation_error")
    await request_return(client, customer, order["id"], (product, 1))
    assert_problem(
        await request_return(client, customer, order["id"], (product, 2)),
        409,
        "return_quantity_exceeded",
    )
    assert await stock_of(product) == 9


async def test_the_return_window_closes(
    client: AsyncClient, settings: AppSettings, customer: Account
) -> None:
    product = await make_product()
    order = await make_paid_order(client, customer, (product, 1))
    stored = await Order.get(order["id"])
    assert stored is not None and stored.paid_at is not None
    await Order.get_pymongo_collection().update_one(
        {"_id": stored.id}, {"$set": {"paid_at": stored.paid_at - timedelta(days=15)}}
    )
    assert_problem(
        await request_return(client, customer, order["id"], (product, 1)),
        409,
        "return_window_closed",
    )
    settings.return_window_days = 30
    assert (await request_return(client, customer, order["id"], (product, 1))).status_code == 201


async def test_twenty_concurrent_returns_of_the_last_unit_refund_once(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    order = await make_paid_order(client, customer, (product, 1))
    responses = await asyncio.gather(
        *(request_return(client, customer, order["id"], (product, 1)) for _ in range(20))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(201) == 1
    assert all(
        r.json()["code"] in ("return_quantity_exceeded", "return_not_allowed")
        for r in responses
        if r.status_code != 201
    )
    assert len(await refunds_for(order)) == 1
    assert await ReturnRequest.count() == 1
    assert await stock_of(product) == 5


async def test_a_replayed_key_returns_the_same_return(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    order = await make_paid_order(client, customer, (product, 2))
    key = str(uuid.uuid4())
    first = await request_return(client, customer, order["id"], (product, 1), key=key)
    again = await request_return(client, customer, order["id"], (product, 1), key=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert len(await refunds_for(order)) == 1
    assert await ReturnRequest.count() == 1
    other = await request_return(client, customer, order["id"], (product, 2), key=key)
    assert_problem(other, 422, "idempotency_key_reused")


async def test_with_manual_approval_an_admin_decides(
    client: AsyncClient, settings: AppSettings, customer: Account, admin: Account
) -> None:
    settings.returns_auto_approve = False
    product = await make_product(price="7.00", stock=5)
    order = await make_paid_order(client, customer, (product, 3))

    waiting = (await request_return(client, customer, order["id"], (product, 1))).json()
    assert waiting["status"] == "requested"
    assert await refunds_for(order) == []
    assert await stock_of(product) == 2
    approve = f"/admin/returns/{waiting['id']}/approve"
    assert_problem(await client.post(approve, headers=customer.headers), 403, "forbidden")

    queue = (await client.get("/admin/returns/?status=requested", headers=admin.headers)).json()
    assert [r["id"] for r in queue["items"]] == [waiting["id"]]
    approved = await client.post(approve, headers=admin.headers)
    assert approved.json()["status"] == "refunded"
    assert [r.amount for r in await refunds_for(order)] == [Decimal("7.00")]
    assert await stock_of(product) == 3

    rejected_request = (await request_return(client, customer, order["id"], (product, 2))).json()
    rejected = await client.post(
        f"/admin/returns/{rejected_request['id']}/reject",
        json={"reason": "Opened and used"},
        headers=admin.headers,
    )
    assert rejected.json()["status"] == "rejected"
    assert_problem(
        await client.post(
            f"/admin/returns/{rejected_request['id']}/approve", headers=admin.headers
        ),
        409,
        "illegal_return_transition",
    )
    # The rejected units can be asked for again.
    assert (await request_return(client, customer, order["id"], (product, 2))).status_code == 201
    status = (
        await client.get(f"/order/{order['id']}/return_status/", headers=customer.headers)
    ).json()
    assert [r["status"] for r in status["returns"]] == ["refunded", "rejected", "requested"]
    assert (status["order_status"], status["refunded_total"]) == ("partially_returned", "7.00")


async def test_a_failed_refund_leaves_the_return_retryable(
    client: AsyncClient,
    app: FastAPI,
    provider: MockProvider,
    clock: ShiftedClock,
    customer: Account,
) -> None:
    product = await make_product(price="4.00", stock=5)
    order = await make_paid_order(client, customer, (product, 2))
    provider.refunds_unavailable = True
    pending = (await request_return(client, customer, order["id"], (product, 2))).json()
    assert pending["status"] == "approved"
    assert await ProviderRefund.count() == 0
    assert await stock_of(product) == 3
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.paid

    provider.refunds_unavailable = False
    clock.advance(REFUND_RETRY_AFTER.total_seconds())
    providers = app.state.payment_providers
    done = await asyncio.gather(*(retry_refunds(providers) for _ in range(3)))
    assert sum(swept.moved for swept in done) >= 1
    status = (
        await client.get(f"/order/{order['id']}/return_status/", headers=customer.headers)
    ).json()
    assert [r["status"] for r in status["returns"]] == ["refunded"]
    assert (status["order_status"], status["refunded_total"]) == ("returned", "8.00")
    assert [r.amount for r in await refunds_for(order)] == [Decimal("8.00")]
    assert await stock_of(product) == 5


async def test_a_refund_settled_elsewhere_since_is_not_settled_again(
    client: AsyncClient, app: FastAPI, provider: MockProvider, customer: Account
) -> None:
    """The settling transaction saves the approved return from the copy this process holds;
    when another process settled it since, that save misses, the return is read, and nothing
    is counted twice."""
    product = await make_product(price="4.00", stock=5)
    order = await make_paid_order(client, customer, (product, 2))
    provider.refunds_unavailable = True
    approved = (await request_return(client, customer, order["id"], (product, 2))).json()
    provider.refunds_unavailable = False
    held = await ReturnRequest.get(approved["id"])
    assert held is not None
    providers = app.state.payment_providers

    settled = await complete_refund(held.model_copy(deep=True), providers)  # elsewhere
    again = await complete_refund(held, providers)  # from the copy held before that

    assert settled.status is again.status is ReturnStatus.refunded
    assert again.version == settled.version  # as stored: the held copy's save missed
    assert [r.amount for r in await refunds_for(order)] == [Decimal("8.00")]
    assert await stock_of(product) == 5
    stored = await Order.get(order["id"])
    assert stored is not None
    assert (stored.status, stored.refunded_total) == (OrderStatus.returned, Decimal("8.00"))


async def test_an_order_without_returns_has_an_empty_return_status(
    client: AsyncClient, customer: Account
) -> None:
    order = await make_paid_order(client, customer, (await make_product(price="2.50"), 1))
    status = await client.get(f"/order/{order['id']}/return_status/", headers=customer.headers)
    assert status.status_code == 200
    assert status.json() == {
        "order_id": order["id"],
        "order_status": "paid",
        "refunded_total": "0.00",
        "returns": [],
    }


async def returns_left_approved(
    client: AsyncClient,
    customer: Account,
    provider: MockProvider,
    clock: ShiftedClock,
    product: Product,
    count: int,
) -> list[dict[str, Any]]:
    """``count`` paid orders of one unit of ``product``, each returned while the provider
    could not refund: approved, with their refunds pending, each approved a second apart."""
    orders = [await make_paid_order(client, customer, (product, 1)) for _ in range(count)]
    provider.refunds_unavailable = True
    for order in orders:
        pending = (await request_return(client, customer, order["id"], (product, 1))).json()
        assert pending["status"] == "approved"
        clock.advance(1)
    provider.refunds_unavailable = False
    return orders


def refusing_refunds(
    monkeypatch: pytest.MonkeyPatch,
    provider: MockProvider,
    keys: set[str],
    error: Callable[[], Exception],
) -> None:
    """The provider raises ``error()`` for a refund of any of ``keys`` (as the set holds them
    when asked), and makes the others."""
    real_refund = provider.refund

    async def refund(**asked: Any) -> Any:
        if asked["key"] in keys:
            raise error()
        return await real_refund(**asked)

    monkeypatch.setattr(provider, "refund", refund)


async def test_a_refund_the_provider_cannot_take_now_does_not_hold_up_the_others(
    client: AsyncClient,
    app: FastAPI,
    provider: MockProvider,
    clock: ShiftedClock,
    customer: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    product = await make_product(price="3.00", stock=5)
    first, second = await returns_left_approved(client, customer, provider, clock, product, 2)
    stuck = await ReturnRequest.find_one({"order_id": PydanticObjectId(first["id"])})
    assert stuck is not None
    refusing_refunds(monkeypatch, provider, {stuck.refund_key}, ProviderUnavailable)
    clock.advance(REFUND_RETRY_AFTER.total_seconds())
    assert (await retry_refunds(app.state.payment_providers)).moved == 1
    statuses = {
        order["id"]: (
            await client.get(f"/order/{order['id']}/return_status/", headers=customer.headers)
        ).json()["returns"][0]["status"]
        for order in (first, second)
    }
    assert statuses == {first["id"]: "approved", second["id"]: "refunded"}
    assert [r.amount for r in await refunds_for(second)] == [Decimal("3.00")]
    assert await refunds_for(first) == []


async def test_a_sweep_step_that_fails_does_not_hold_up_the_steps_after_it(
    client: AsyncClient,
    app: FastAPI,
    provider: MockProvider,
    clock: ShiftedClock,
    customer: Account,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    product = await make_product(price="5.00", stock=5)
    [order] = await returns_left_approved(client, customer, provider, clock, product, 1)

    async def broken(*_: Any) -> int:
        raise RuntimeError("an order the sweeper cannot settle")

    def failures() -> float:
        return (
            REGISTRY.get_sample_value("shop_sweeper_failures_total", {"kind": "overdue_orders"})
            or 0.0
        )

    failed_before = failures()
    monkeypatch.setattr(background, "sweep_overdue", broken)  # the first step, every time
    clock.advance(REFUND_RETRY_AFTER.total_seconds())
    await background.Sweeper(app.state.payment_providers, timedelta(seconds=30)).sweep_once()
    assert [r.amount for r in await refunds_for(order)] == [Decimal("5.00")]
    assert "sweeping overdue_orders failed" in caplog.text
    assert failures() == failed_before + 1


async def test_refunds_the_provider_keeps_refusing_hold_up_no_other_return(
    client: AsyncClient,
    app: FastAPI,
    provider: MockProvider,
    clock: ShiftedClock,
    customer: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each sweep retries one batch of pending refunds, the longest waiting first, and the
    next goes on from where it ended, then starts over: a batch's worth of refunds the
    provider always refuses keeps the sweeper from none of the others."""
    product = await make_product(price="2.00", stock=10)
    orders = await returns_left_approved(client, customer, provider, clock, product, 3)
    refused = {
        r.refund_key
        for r in await ReturnRequest.find_all().sort("updated_at").to_list()
        if str(r.order_id) != orders[-1]["id"]
    }
    no_longer = partial(RefundFailed, "this charge can no longer be refunded")
    refusing_refunds(monkeypatch, provider, refused, no_longer)
    clock.advance(REFUND_RETRY_AFTER.total_seconds())
    sweeper = background.Sweeper(app.state.payment_providers, timedelta(seconds=30), batch=2)
    await sweeper.sweep_once()  # the two the provider refuses
    assert await refunds_for(orders[-1]) == []
    await sweeper.sweep_once()  # then the one after them
    assert [r.amount for r in await refunds_for(orders[-1])] == [Decimal("2.00")]

    refused.clear()  # the provider takes them now: the walk, past its end, starts over
    await sweeper.sweep_once()
    assert [len(await refunds_for(order)) for order in orders] == [1, 1, 1]
