import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.cart.models import Cart
from shop.kit.config import AppSettings
from shop.orders.models import Order, PendingOrder
from tests.conftest import CommandLog
from tests.factories import (
    Account,
    add_to_cart,
    assert_problem,
    make_product,
    make_user,
    place_order,
    set_stock,
    stock_of,
)


async def cart_lines(account_id: object) -> dict[str, int]:
    cart = await Cart.find_one({"user_id": account_id})
    return {} if cart is None else {str(i.product_id): i.quantity for i in cart.items}


async def test_checkout_snapshots_the_cart_reserves_stock_and_empties_it(
    client: AsyncClient, settings: AppSettings, customer: Account
) -> None:
    mug = await make_product(name="Mug", price="12.50", stock=10)
    pen = await make_product(name="Pen", price="0.10", stock=5)
    order = await place_order(client, customer, (mug, 2), (pen, 3))

    assert order["status"] == "pending_payment"
    assert [
        (ln["name"], ln["unit_price"], ln["quantity"], ln["line_total"]) for ln in order["lines"]
    ] == [
        ("Mug", "12.50", 2, "25.00"),
        ("Pen", "0.10", 3, "0.30"),
    ]
    assert (order["subtotal"], order["total"], order["currency"]) == ("25.30", "25.30", "EUR")
    created = datetime.fromisoformat(order["created_at"])
    expires = datetime.fromisoformat(order["expires_at"])
    assert expires - created == timedelta(seconds=settings.payment_timeout_seconds)
    assert [h["status"] for h in order["status_history"]] == ["pending_payment"]

    assert (await stock_of(mug), await stock_of(pen)) == (8, 2)
    assert await cart_lines(customer.id) == {}
    assert await PendingOrder.get(order["id"]) is not None
    stored = await Order.get(order["id"])
    assert stored is not None
    assert stored.total == Decimal("25.30")


async def test_later_price_changes_do_not_touch_a_placed_order(
    client: AsyncClient, customer: Account, admin: Account
) -> None:
    product = await make_product(price="4.00")
    order = await place_order(client, customer, (product, 1))
    await client.patch(
        f"/products/{product.id}", json={"price": "9.00", "name": "New"}, headers=admin.headers
    )
    again = (await client.get(f"/order/{order['id']}/", headers=customer.headers)).json()
    assert (again["lines"][0]["name"], again["lines"][0]["unit_price"], again["total"]) == (
        order["lines"][0]["name"],
        "4.00",
        "4.00",
    )


async def test_an_empty_cart_cannot_be_ordered(client: AsyncClient, customer: Account) -> None:
    assert_problem(await client.post("/order/create/", headers=customer.headers), 409, "cart_empty")
    assert await Order.count() == 0


async def test_short_stock_refuses_the_whole_order_and_changes_nothing(
    client: AsyncClient, customer: Account, admin: Account
) -> None:
    plenty = await make_product(stock=10)
    scarce = await make_product(stock=5)
    await add_to_cart(client, customer, plenty, 2)
    await add_to_cart(client, customer, scarce, 4)
    await client.patch(f"/products/{scarce.id}", json={"stock": 3}, headers=admin.headers)

    refused = await client.post("/order/create/", headers=customer.headers)
    body = assert_problem(refused, 409, "insufficient_stock")
    assert body["products"] == [str(scarce.id)]
    assert (await stock_of(plenty), await stock_of(scarce)) == (10, 3)
    assert await cart_lines(customer.id) == {str(plenty.id): 2, str(scarce.id): 4}
    assert await Order.count() == 0
    assert await PendingOrder.count() == 0


async def test_a_withdrawn_product_refuses_the_order(
    client: AsyncClient, customer: Account, admin: Account
) -> None:
    kept = await make_product(stock=4)
    withdrawn = await make_product(stock=4)
    await add_to_cart(client, customer, kept, 1)
    await add_to_cart(client, customer, withdrawn, 1)
    await client.delete(f"/products/{withdrawn.id}", headers=admin.headers)

    body = assert_problem(
        await client.post("/order/create/", headers=customer.headers), 409, "product_unavailable"
    )
    assert body["products"] == [str(withdrawn.id)]
    assert (await stock_of(kept), await stock_of(withdrawn)) == (4, 4)
    assert len(await cart_lines(customer.id)) == 2
    assert await Order.count() == 0


async def test_last_ten_units_go_to_exactly_ten_of_a_hundred_customers(
    client: AsyncClient, app: FastAPI
) -> None:
    product = await make_product(stock=100)
    customers = [await make_user(app) for _ in range(100)]
    for customer in customers:
        assert (await add_to_cart(client, customer, product, 1)).status_code == 200
    await set_stock(product, 10)

    async def check_out(customer: Account) -> Response:
        """As a client would: a 503 (the database did not answer in time, as 100 checkouts
        contending for one product's stock can make it on a loaded machine) is tried again."""
        for _ in range(30):
            answer = await client.post("/order/create/", headers=customer.headers)
            if answer.status_code != 503:
                return answer
            await asyncio.sleep(0.5)
        return answer

    responses = await asyncio.gather(*(check_out(c) for c in customers))
    created = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == 10, sorted({r.text for r in refused})
    assert all(r.json()["code"] == "insufficient_stock" for r in refused)
    assert await stock_of(product) == 0
    assert await Order.count() == 10
    buyers = {o.user_id for o in await Order.find_all().to_list()}
    for customer in customers:
        expected = {} if customer.id in buyers else {str(product.id): 1}
        assert await cart_lines(customer.id) == expected


async def test_orders_are_private(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    order = await place_order(client, ann, (await make_product(), 1))
    assert_problem(
        await client.get(f"/order/{order['id']}/", headers=bob.headers), 404, "order_not_found"
    )
    assert_problem(
        await client.get("/order/64b7f0c2a1b2c3d4e5f60718/", headers=ann.headers),
        404,
        "order_not_found",
    )
    assert (await client.get("/order/not-an-id/", headers=ann.headers)).status_code in (404, 422)


async def test_concurrent_checkouts_of_one_product_take_turns_instead_of_conflicting(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog
) -> None:
    """Ten customers order the same product at once from one process: each checkout holds
    the product's stock for its transaction, so none meets another in a write conflict (an
    aborted transaction, retried after a backoff), and the stock is exact."""
    product = await make_product(stock=20)
    customers = [await make_user(app) for _ in range(10)]
    for customer in customers:
        assert (await add_to_cart(client, customer, product, 2)).status_code == 200
    db_commands.clear()
    created = await asyncio.gather(
        *(client.post("/order/create/", headers=c.headers) for c in customers)
    )
    assert [r.status_code for r in created] == [201] * 10
    names = [name for name, _ in db_commands.commands]
    assert (names.count("commitTransaction"), names.count("abortTransaction")) == (10, 0)
    assert await stock_of(product) == 0
    assert await Order.count() == 10
