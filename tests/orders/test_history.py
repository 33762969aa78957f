import asyncio
import base64

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from shop.cart.models import Cart, CartOwner
from shop.orders.models import Order
from shop.orders.service import number_unnumbered_orders
from tests.conftest import CommandLog
from tests.explain import plan_of
from tests.factories import (
    Account,
    add_to_cart,
    assert_problem,
    make_product,
    make_user,
    pay,
    place_order,
    set_stock,
)


async def test_history_lists_only_my_orders_newest_first(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product(stock=50)
    placed = [await place_order(client, ann, (product, n)) for n in (1, 2, 3)]
    await place_order(client, bob, (product, 1))
    await pay(client, ann, placed[1]["id"])

    history = (await client.get("/order/history/", headers=ann.headers)).json()
    assert [(o["id"], o["status"], o["item_count"]) for o in history["items"]] == [
        (placed[2]["id"], "pending_payment", 3),
        (placed[1]["id"], "paid", 2),
        (placed[0]["id"], "pending_payment", 1),
    ]
    assert history["next_cursor"] is None
    assert {"total", "subtotal", "currency", "created_at"} <= history["items"][0].keys()


async def test_history_pages_and_filters(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=50)
    placed = [await place_order(client, customer, (product, 1)) for _ in range(5)]
    for order in placed[:2]:
        await pay(client, customer, order["id"])

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/order/history/", params=params, headers=customer.headers)).json()
        seen += [o["id"] for o in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [o["id"] for o in reversed(placed)]

    paid = await client.get("/order/history/", params={"status": "paid"}, headers=customer.headers)
    assert [o["id"] for o in paid.json()["items"]] == [placed[1]["id"], placed[0]["id"]]


async def test_history_rejects_bad_parameters(client: AsyncClient, customer: Account) -> None:
    for params in [{"limit": 0}, {"limit": 101}, {"status": "lost"}]:
        response = await client.get("/order/history/", params=params, headers=customer.headers)
        assert_problem(response, 422, "validation_error")
    bad_cursor = await client.get(
        "/order/history/", params={"cursor": "@@@"}, headers=customer.headers
    )
    assert_problem(bad_cursor, 422, "invalid_cursor")
    assert_problem(await client.get("/order/history/"), 401, "not_authenticated")


@pytest.mark.parametrize(
    "raw",
    [
        b"123:abc",  # not an id
        b"999999999999999999999999:64b7f0c2a1b2c3d4e5f60718",  # a time past any calendar
        b"-99999999999999999999:64b7f0c2a1b2c3d4e5f60718",
        b"12:34:56",
        b"\xff\xfe",
    ],
)
async def test_crafted_cursors_are_refused_not_failed(
    client: AsyncClient, raw: bytes, customer: Account
) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode()
    for given in (cursor, "not base64 at all!", "===="):
        response = await client.get(
            "/order/history/", params={"cursor": given}, headers=customer.headers
        )
        assert_problem(response, 422, "invalid_cursor")


async def numbers_of(account: Account) -> list[int | None]:
    """The customer's order numbers, as stored, oldest first."""
    orders = await Order.find({"user_id": account.id}).sort("created_at").to_list()
    return [order.number for order in orders]


async def test_orders_are_numbered_per_customer_without_gaps(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    """A refused checkout takes no number; another customer's orders count apart."""
    other = await make_user(app)
    product = await make_product(stock=3)
    await place_order(client, customer, (product, 1))
    await place_order(client, other, (product, 1))
    await add_to_cart(client, customer, product, 1)
    await set_stock(product, 0)
    refused = await client.post("/order/create/", headers=customer.headers)
    assert_problem(refused, 409, "insufficient_stock")
    await set_stock(product, 5)
    await place_order(client, customer)  # the line still in the cart
    assert await numbers_of(customer) == [1, 2]
    assert await numbers_of(other) == [1]
    assert await Cart.orders_placed_by(customer.id) == 2


async def test_a_status_page_reaches_past_ranges_without_it(
    client: AsyncClient, customer: Account
) -> None:
    """Only the first and the last of 9 orders are paid: the second page of paid ones comes
    from ranges twice as wide each time, down to order 1."""
    product = await make_product(stock=20)
    placed = [await place_order(client, customer, (product, 1)) for _ in range(9)]
    for order in (placed[0], placed[-1]):
        await pay(client, customer, order["id"])
    first = await client.get(
        "/order/history/", params={"status": "paid", "limit": 1}, headers=customer.headers
    )
    assert [o["id"] for o in first.json()["items"]] == [placed[-1]["id"]]
    params = {"status": "paid", "limit": 1, "cursor": first.json()["next_cursor"]}
    second = (await client.get("/order/history/", params=params, headers=customer.headers)).json()
    assert ([o["id"] for o in second["items"]], second["next_cursor"]) == ([placed[0]["id"]], None)


async def test_a_cursor_past_the_history_ranges_over_no_more_than_there_is(
    client: AsyncClient, customer: Account, db_commands: CommandLog
) -> None:
    await place_order(client, customer, (await make_product(), 1))
    far = base64.urlsafe_b64encode(b"999999999999999999").decode()
    db_commands.clear()
    page = await client.get("/order/history/", params={"cursor": far}, headers=customer.headers)
    assert [o["item_count"] for o in page.json()["items"]] == [1]
    assert [name for name, _ in db_commands.commands] == ["find", "find", "find"]


async def test_orders_stored_before_numbering_are_numbered_at_start_up(
    client: AsyncClient, app: FastAPI, customer: Account, db_commands: CommandLog
) -> None:
    """In the order they were placed, after what the customer's count already holds; the
    history then shows them all, newest first. Every start looks for such orders through an
    index, not by reading every order."""
    product = await make_product(stock=20)
    placed = [await place_order(client, customer, (product, 1)) for _ in range(4)]
    orders = Order.get_pymongo_collection()
    carts = Cart.get_pymongo_collection()
    # As stored before orders were numbered: no number, no count.
    await orders.update_many({"user_id": customer.id}, {"$unset": {"number": ""}})
    await carts.update_one({"_id": customer.id}, {"$unset": {"orders_placed": ""}})
    Cart.forget(CartOwner.customer(customer.id))
    assert await number_unnumbered_orders() == 4
    assert await numbers_of(customer) == [1, 2, 3, 4]
    db_commands.clear()
    assert await number_unnumbered_orders() == 0
    (looked,) = db_commands.sent
    plan = await plan_of(orders.database, looked)
    assert "IXSCAN" in plan and "COLLSCAN" not in plan, plan
    await place_order(client, customer, (product, 1))
    assert await numbers_of(customer) == [1, 2, 3, 4, 5]
    history = (await client.get("/order/history/", headers=customer.headers)).json()
    assert [o["id"] for o in history["items"]][1:] == [o["id"] for o in reversed(placed)]


async def test_concurrent_checkouts_of_one_customer_number_orders_once_each(
    client: AsyncClient, customer: Account
) -> None:
    """Ten shoppers on one account, each adding a unit then checking out, three times over,
    all at once: the orders placed are numbered 1 to n, none twice, and every unit added is
    in one of them or still in the cart."""
    product = await make_product(stock=100)

    async def shop() -> list[int]:
        statuses = []
        for _ in range(3):
            await add_to_cart(client, customer, product, 1)
            created = await client.post("/order/create/", headers=customer.headers)
            statuses.append(created.status_code)
        return statuses

    statuses = [
        status for each in await asyncio.gather(*(shop() for _ in range(10))) for status in each
    ]
    assert set(statuses) <= {201, 409}, statuses
    orders = await Order.find({"user_id": customer.id}).to_list()
    assert sorted(o.customer_number for o in orders) == list(range(1, len(orders) + 1))
    assert len(orders) == statuses.count(201) > 1
    assert await Cart.orders_placed_by(customer.id) == len(orders)
    ordered = sum(line.quantity for o in orders for line in o.lines)
    left = (await client.get("/cart/", headers=customer.headers)).json()["total_quantity"]
    assert ordered + left == 30
