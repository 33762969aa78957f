import asyncio

from fastapi import FastAPI
from httpx import AsyncClient

from shop.discounts.models import Discount, DiscountKind, DiscountScope
from shop.orders.models import Order, OrderStatus, PendingOrder
from tests.factories import (
    Account,
    PausingProvider,
    add_to_cart,
    apply_code,
    assert_problem,
    charges_for,
    make_discount,
    make_paid_order,
    make_product,
    make_user,
    pay,
    place_order,
    stock_of,
)


async def test_a_customer_cancels_an_unpaid_order_and_everything_is_released(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    code = await make_discount(
        scope=DiscountScope.cart, kind=DiscountKind.fixed, value="1.00", code="ONE", usage_limit=1
    )
    await add_to_cart(client, customer, product, 2)
    await apply_code(client, customer, "ONE")
    order = (await client.post("/order/create/", headers=customer.headers)).json()
    assert await stock_of(product) == 3

    responses = await asyncio.gather(
        *(client.post(f"/order/{order['id']}/cancel/", headers=customer.headers) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"order_cancelled"}
    cancelled = next(r.json() for r in responses if r.status_code == 200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["status_history"][-1]["reason"] == "customer_request"
    assert await stock_of(product) == 5  # once, not ten times
    fresh = await Discount.get(code.id)
    assert fresh is not None
    assert fresh.times_used == 0
    assert await PendingOrder.get(order["id"]) is None
    refused = assert_problem(await pay(client, customer, order["id"]), 409, "order_cancelled")
    assert "customer cancelled" in str(refused["detail"])


async def test_paid_and_foreign_orders_cannot_be_cancelled(
    client: AsyncClient, app: FastAPI
) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product(stock=5)
    order = await make_paid_order(client, ann, (product, 1))
    response = await client.post(f"/order/{order['id']}/cancel/", headers=ann.headers)
    assert_problem(response, 409, "order_already_paid")
    pending = await place_order(client, ann, (product, 1))
    response = await client.post(f"/order/{pending['id']}/cancel/", headers=bob.headers)
    assert_problem(response, 404, "order_not_found")
    assert await stock_of(product) == 3


async def test_a_cancel_during_a_running_payment_is_refused_and_the_order_paid(
    client: AsyncClient, customer: Account, paused_provider: PausingProvider
) -> None:
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 1))
    paying = asyncio.create_task(pay(client, customer, order["id"]))
    await paused_provider.charging.wait()

    cancel = await client.post(f"/order/{order['id']}/cancel/", headers=customer.headers)
    assert_problem(cancel, 409, "payment_in_progress")
    paused_provider.release()
    assert (await paying).status_code == 200
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.paid
    assert [c.status for c in await charges_for(order["id"])] == ["succeeded"]
    assert await stock_of(product) == 4


async def test_a_payment_after_a_cancel_is_refused_without_a_charge(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 1))
    cancel = await client.post(f"/order/{order['id']}/cancel/", headers=customer.headers)
    assert cancel.status_code == 200

    refused = assert_problem(await pay(client, customer, order["id"]), 409, "order_cancelled")
    assert "customer cancelled" in str(refused["detail"])
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.status is OrderStatus.cancelled
    assert await charges_for(order["id"]) == []
    assert await stock_of(product) == 5


async def test_cancels_racing_payments_never_both_charge_and_release(
    client: AsyncClient, app: FastAPI
) -> None:
    """Under real concurrency, whichever wins: a paid order has one charge and keeps its
    stock; a cancelled one has none and gave its stock back."""
    for _ in range(5):
        account = await make_user(app)
        product = await make_product(stock=5)
        order = await place_order(client, account, (product, 1))
        paid, cancelled = await asyncio.gather(
            pay(client, account, order["id"]),
            client.post(f"/order/{order['id']}/cancel/", headers=account.headers),
        )
        stored = await Order.get(order["id"])
        assert stored is not None
        was_paid = stored.status is OrderStatus.paid
        assert was_paid or stored.status is OrderStatus.cancelled
        charges = [c for c in await charges_for(order["id"]) if c.status == "succeeded"]
        assert len(charges) == int(was_paid)
        assert await stock_of(product) == 5 - int(was_paid)
        assert (paid.status_code, cancelled.status_code) == ((200, 409) if was_paid else (409, 200))
