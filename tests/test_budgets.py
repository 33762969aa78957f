"""Deterministic performance budgets: database round trips per request, and index use.

The embedded server does about a thousand simple operations a second, so round trips are
what decide a request's speed; these budgets keep them from creeping up unnoticed. Each
pins the exact commands, so one more (an N+1 over cart or order lines, say) fails it.
"""

from collections.abc import Awaitable

from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.discounts.models import DiscountKind, DiscountScope
from shop.orders.models import Order
from shop.orders.service import sweep_overdue
from tests.conftest import CommandLog
from tests.explain import plan_of
from tests.factories import (
    Account,
    add_to_cart,
    make_discount,
    make_product,
    make_user,
    pay,
    place_order,
    view_cart,
)


async def round_trips(db_commands: CommandLog, request: Awaitable[Response]) -> list[str]:
    db_commands.clear()
    response = await request
    assert response.status_code < 300, response.text
    return [f"{name} {collection}".strip() for name, collection in db_commands.commands]


CHECKOUT = [
    "findAndModify carts",  # read and empty the cart
    "find products",
    "find discounts",
    "update products",  # every line's guarded reservation, in one command
    "insert orders",
    "insert pending_orders",
    "commitTransaction",
]


async def test_cart_requests_cost_one_command_each(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=100)
    other = await make_product(stock=100)
    await add_to_cart(client, customer, other, 1)  # the catalog cache now holds `other`
    await view_cart(client, customer)

    view = client.get("/cart/", headers=customer.headers)
    assert await round_trips(db_commands, view) == ["find carts"]
    more = add_to_cart(client, customer, other, 1)
    assert await round_trips(db_commands, more) == ["findAndModify carts"]
    # A new line: the increment misses, the push lands.
    await add_to_cart(client, await make_user(app), product, 1)  # someone else's: now cached
    new_line = add_to_cart(client, customer, product, 1)
    assert await round_trips(db_commands, new_line) == ["findAndModify carts"] * 2
    some = client.delete(
        f"/cart/remove/?product_id={other.id}&quantity=1", headers=customer.headers
    )
    assert await round_trips(db_commands, some) == ["findAndModify carts"]
    line = client.delete(f"/cart/remove/?product_id={product.id}", headers=customer.headers)
    assert await round_trips(db_commands, line) == ["findAndModify carts"]
    # Taking off as much as the line holds removes it: the decrement misses, the pull lands.
    rest = client.delete(
        f"/cart/remove/?product_id={other.id}&quantity=1", headers=customer.headers
    )
    assert await round_trips(db_commands, rest) == ["findAndModify carts"] * 2


async def test_a_cold_cache_costs_one_read_of_products_and_one_of_discounts(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    await add_to_cart(client, customer, await make_product(), 1)
    app.state.catalog.forget("products", None)
    app.state.catalog.forget("discounts", None)
    view = client.get("/cart/", headers=customer.headers)
    assert await round_trips(db_commands, view) == ["find carts", "find products", "find discounts"]


async def test_a_per_customer_limit_costs_the_cart_one_read_of_the_customers_uses(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product()
    await make_discount(
        scope=DiscountScope.product,
        kind=DiscountKind.percent,
        value="10",
        product_ids=[product.id],
        per_user_limit=1,
    )
    await add_to_cart(client, customer, product, 1)
    view = client.get("/cart/", headers=customer.headers)
    assert await round_trips(db_commands, view) == ["find carts", "find discount_usage"]


async def test_checkout_costs_the_same_for_one_line_and_fifty(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog
) -> None:
    for lines in (1, 50):
        account = await make_user(app)
        for _ in range(lines):
            await add_to_cart(client, account, await make_product(stock=5), 1)
        checkout = client.post("/order/create/", headers=account.headers)
        assert await round_trips(db_commands, checkout) == CHECKOUT, lines


async def test_payment_history_and_detail_budgets(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    assert await round_trips(db_commands, pay(client, customer, order["id"])) == [
        "insert idempotency_keys",  # the key, taken before anything runs
        "findAndModify orders",  # the order claimed for this attempt, if payable
        "insert mock_provider_charges",  # the provider's charge
        "update orders",  # paid
        "delete pending_orders",  # its payment window closed
        "findAndModify idempotency_keys",  # the outcome, kept for retries
    ]
    history = client.get("/order/history/", headers=customer.headers)
    assert await round_trips(db_commands, history) == ["find orders"]
    detail = client.get(f"/order/{order['id']}/", headers=customer.headers)
    assert await round_trips(db_commands, detail) == ["find orders"]
    assert await round_trips(db_commands, client.get("/products/")) == ["find products"]


async def test_hot_queries_use_indexes(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    """Every query the history, the catalog and the overdue sweep really send is served by
    an index: the service's own commands, captured as they went out, are explained."""
    await place_order(client, customer, (await make_product(), 1))
    db_commands.clear()
    await client.get("/order/history/", headers=customer.headers)
    await client.get("/order/history/?status=paid", headers=customer.headers)
    await client.get("/products/")
    await sweep_overdue(app.state.payment_providers)
    finds = [c for c in db_commands.sent if "find" in c]
    assert [(c["find"], sorted(c["filter"])) for c in finds] == [
        ("orders", ["user_id"]),
        ("orders", ["status", "user_id"]),
        ("products", ["active"]),
        ("orders", ["expires_at", "status"]),
    ]
    database = Order.get_pymongo_collection().database
    for command in finds:
        plan = await plan_of(database, command)
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (command["find"], plan)


async def test_a_sale_costs_checkout_one_counted_redemption(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=10)
    await make_discount(
        scope=DiscountScope.product, kind=DiscountKind.percent, value="10", product_ids=[product.id]
    )
    await add_to_cart(client, customer, product, 1)
    checkout = await round_trips(
        db_commands, client.post("/order/create/", headers=customer.headers)
    )
    assert (
        checkout
        == [
            *CHECKOUT[:4],
            "update discounts",  # usage_limit bookkeeping; no per-user counter without a limit
            *CHECKOUT[4:],
        ]
    )
