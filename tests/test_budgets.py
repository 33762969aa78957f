"""Deterministic performance budgets: database round trips per request, and index use.

The embedded server does about a thousand simple operations a second, so round trips are
what decide a request's speed; these budgets keep them from creeping up unnoticed.
"""

from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.catalog.models import Product
from shop.clock import utcnow
from shop.discounts.models import DiscountKind, DiscountScope
from shop.orders.models import Order, OrderStatus
from tests.conftest import CommandLog
from tests.factories import (
    add_to_cart,
    make_discount,
    make_product,
    make_user,
    pay,
    place_order,
)


async def round_trips(db_commands: CommandLog, request: Awaitable[Response]) -> list[str]:
    db_commands.commands.clear()
    response = await request
    assert response.status_code < 300, response.text
    return [f"{name} {collection}".strip() for name, collection in db_commands.commands]


async def test_round_trips_per_request(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog
) -> None:
    account = await make_user(app)
    product = await make_product(stock=100)
    other = await make_product(stock=100)
    await add_to_cart(client, account, other, 1)

    assert await round_trips(db_commands, client.get("/products/")) == ["find products"]
    assert await round_trips(db_commands, add_to_cart(client, account, other, 1)) == [
        "find products",
        "findAndModify carts",
        "find discounts",
    ]
    # A new line: the increment misses, the push lands, and the other line's product is read.
    assert len(await round_trips(db_commands, add_to_cart(client, account, product, 1))) <= 5
    assert await round_trips(db_commands, client.get("/cart/", headers=account.headers)) == [
        "find carts",
        "find products",
        "find discounts",
    ]
    checkout = await round_trips(
        db_commands, client.post("/order/create/", headers=account.headers)
    )
    assert checkout == [
        "find carts",
        "find products",
        "find discounts",
        "update products",  # one guarded reservation per line
        "update products",
        "insert orders",
        "insert pending_orders",
        "update carts",
        "commitTransaction",
    ]
    history = client.get("/order/history/", headers=account.headers)
    assert await round_trips(db_commands, history) == ["find orders"]

    order = await place_order(client, account, (product, 1))
    assert len(await round_trips(db_commands, pay(client, account, order["id"]))) <= 8
    detail = client.get(f"/order/{order['id']}/", headers=account.headers)
    assert await round_trips(db_commands, detail) == ["find orders"]


async def winning_stage(collection: Any, query: dict[str, Any], sort: list[Any]) -> str:
    plan = await collection.find(query).sort(sort).limit(20).explain()
    stages: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        stages.append(node.get("stage", ""))
        for child in [node.get("inputStage"), *node.get("inputStages", [])]:
            if child:
                walk(child)

    walk(plan["queryPlanner"]["winningPlan"])
    return ",".join(stages)


async def test_hot_queries_use_indexes(app: FastAPI) -> None:
    await make_product()
    user_orders = await winning_stage(
        Order.get_pymongo_collection(),
        {"user_id": (await make_user(app)).id},
        [("created_at", -1), ("_id", -1)],
    )
    filtered = await winning_stage(
        Order.get_pymongo_collection(),
        {"user_id": (await make_user(app)).id, "status": OrderStatus.paid.value},
        [("created_at", -1), ("_id", -1)],
    )
    overdue = await winning_stage(
        Order.get_pymongo_collection(),
        {"status": OrderStatus.pending_payment.value, "expires_at": {"$lte": utcnow()}},
        [("expires_at", 1)],
    )
    catalog = await winning_stage(Product.get_pymongo_collection(), {"active": True}, [("_id", 1)])
    for plan in (user_orders, filtered, overdue, catalog):
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, plan


async def test_a_sale_costs_checkout_one_counted_redemption(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog
) -> None:
    account = await make_user(app)
    product = await make_product(stock=10)
    await make_discount(
        scope=DiscountScope.product, kind=DiscountKind.percent, value="10", product_ids=[product.id]
    )
    await add_to_cart(client, account, product, 1)
    checkout = await round_trips(
        db_commands, client.post("/order/create/", headers=account.headers)
    )
    assert checkout == [
        "find carts",
        "find products",
        "find discounts",
        "update products",
        "update discounts",  # usage_limit bookkeeping; no per-user counter without a limit
        "insert orders",
        "insert pending_orders",
        "update carts",
        "commitTransaction",
    ]
