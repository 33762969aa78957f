from datetime import timedelta
from typing import Any

from httpx import AsyncClient

from shop.kit.clock import utcnow
from shop.orders.models import Order
from tests.conftest import CommandLog
from tests.explain import plan_of
from tests.factories import (
    Account,
    assert_problem,
    make_paid_order,
    make_product,
    make_user,
    place_order,
    request_return,
)


async def test_admins_find_any_order_by_status_customer_and_date_newest_first(
    client: AsyncClient, app: Any, admin: Account, customer: Account
) -> None:
    other = await make_user(app)
    product = await make_product(stock=50)
    paid = await make_paid_order(client, customer, (product, 1))
    pending = await place_order(client, customer, (product, 2))
    theirs = await place_order(client, other, (product, 1))

    async def ids(**params: Any) -> list[str]:
        listed = await client.get("/admin/orders/", params=params, headers=admin.headers)
        assert listed.status_code == 200, listed.text
        return [o["id"] for o in listed.json()["items"]]

    assert await ids() == [theirs["id"], pending["id"], paid["id"]]
    assert await ids(status="paid") == [paid["id"]]
    assert await ids(user_id=str(customer.id)) == [pending["id"], paid["id"]]
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert await ids(created_before=later, status="pending_payment") == [
        theirs["id"],
        pending["id"],
    ]
    assert await ids(created_from=later) == []

    pages, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/admin/orders/", params=params, headers=admin.headers)).json()
        pages.append([o["id"] for o in page["items"]])
        if (cursor := page["next_cursor"]) is None:
            break
    assert pages == [[theirs["id"], pending["id"]], [paid["id"]]]


async def test_an_order_in_full_for_support(
    client: AsyncClient, admin: Account, customer: Account
) -> None:
    product = await make_product(price="8.00", stock=5)
    order = await make_paid_order(client, customer, (product, 2))
    await request_return(client, customer, order["id"], (product, 1))
    seen = (await client.get(f"/admin/orders/{order['id']}", headers=admin.headers)).json()
    assert seen["user_id"] == str(customer.id)
    assert seen["payment"]["amount"] == "16.00" and seen["payment_attempts"] == 1
    assert [s["status"] for s in seen["status_history"]] == [
        "pending_payment",
        "paid",
        "partially_returned",
    ]
    assert [(r["status"], r["refund_amount"]) for r in seen["returns"]] == [("refunded", "8.00")]
    missing = await client.get("/admin/orders/64b7f0c2a1b2c3d4e5f60718", headers=admin.headers)
    assert_problem(missing, 404, "order_not_found")


async def test_admins_find_customers_by_the_start_of_their_email(
    client: AsyncClient, app: Any, admin: Account
) -> None:
    ann, anna, bob = [await make_user(app) for _ in range(3)]
    for account, email in ((ann, "ann@shop.test"), (anna, "anna@shop.test"), (bob, "bob@x.test")):
        await account.user.set({"email": email})
    found = await client.get("/admin/users/", params={"email": " ANN"}, headers=admin.headers)
    assert [u["email"] for u in found.json()["items"]] == ["ann@shop.test", "anna@shop.test"]
    dotted = await client.get("/admin/users/", params={"email": "ann."}, headers=admin.headers)
    assert dotted.json()["items"] == []  # the dot is a dot, not "any character"
    assert "password_hash" not in found.text


async def test_customers_get_403_from_every_admin_view(
    client: AsyncClient, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    for path in ("/admin/orders/", f"/admin/orders/{order['id']}", "/admin/users/"):
        assert_problem(await client.get(path, headers=customer.headers), 403, "forbidden")


async def test_the_admin_order_list_is_served_by_indexes(
    client: AsyncClient, admin: Account, customer: Account, db_commands: CommandLog
) -> None:
    await place_order(client, customer, (await make_product(), 1))
    db_commands.clear()
    for params in ({}, {"status": "paid"}, {"created_from": utcnow().isoformat()}):
        await client.get("/admin/orders/", params=params, headers=admin.headers)
    finds = [c for c in db_commands.sent if c.get("find") == "orders"]
    assert len(finds) == 3
    database = Order.get_pymongo_collection().database
    for command in finds:
        plan = await plan_of(database, command)
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (command["filter"], plan)
