"""Guest carts: filled before signing up, named by X-Cart-Token, merged at login."""

import asyncio
import hashlib
import secrets
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.accounts.throttle import Throttles
from shop.cart.models import Cart, GuestCart
from shop.catalog.models import Product
from shop.discounts.models import DiscountKind, DiscountScope
from shop.kit.clock import ShiftedClock
from shop.kit.config import AppSettings
from tests.conftest import CommandLog
from tests.explain import plan_of
from tests.factories import (
    Account,
    add_to_cart,
    assert_problem,
    make_discount,
    make_product,
    make_user,
    set_stock,
)

TOKEN = "X-Cart-Token"


async def guest_add(
    client: AsyncClient, product: Product, quantity: int = 1, token: str | None = None
) -> Response:
    return await client.post(
        "/cart/add/",
        json={"product_id": str(product.id), "quantity": quantity},
        headers={TOKEN: token} if token else {},
    )


async def start_guest_cart(client: AsyncClient, product: Product, quantity: int = 1) -> str:
    added = await guest_add(client, product, quantity)
    assert added.status_code == 200, added.text
    token: str = added.headers[TOKEN]
    return token


async def merge(client: AsyncClient, account: Account, token: str) -> Response:
    return await client.post("/cart/merge/", headers={**account.headers, TOKEN: token})


async def quantities(account: Account) -> dict[str, int]:
    cart = await Cart.of_user(account.id)
    return {str(i.product_id): i.quantity for i in cart.items}


async def test_a_guest_fills_a_cart_signs_up_merges_and_orders_what_it_saw(
    client: AsyncClient, app: FastAPI
) -> None:
    mug, pen = await make_product(price="12.50"), await make_product(price="2.00")
    await make_discount(scope=DiscountScope.cart, kind=DiscountKind.percent, value="10", code="W10")
    token = await start_guest_cart(client, mug, 2)
    assert len(token) >= 22  # at least 128 bits
    assert (await guest_add(client, pen, 3, token)).status_code == 200
    coded = await client.post("/cart/discount/", json={"code": "W10"}, headers={TOKEN: token})
    assert coded.status_code == 200, coded.text
    seen = (await client.get("/cart/", headers={TOKEN: token})).json()
    assert (seen["subtotal"], seen["total"]) == ("31.00", "27.90")
    # Only the token's hash is kept.
    [stored] = await GuestCart.find_all().to_list()
    assert stored.guest == hashlib.sha256(token.encode()).hexdigest()

    refused = await client.post("/order/create/", headers={TOKEN: token})
    assert "POST /cart/merge/" in assert_problem(refused, 401, "not_authenticated")["detail"]

    customer = await make_user(app)  # signed up and logged in
    merged = await merge(client, customer, token)
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert (body["capped"], body["left_out"]) == ([], [])
    assert (body["total"], body["cart_discount"]["code"]) == ("27.90", "W10")
    assert (await client.get("/cart/", headers={TOKEN: token})).status_code == 404

    created = await client.post("/order/create/", headers=customer.headers)
    assert created.status_code == 201, created.text
    order = created.json()
    assert [(line["product_id"], line["quantity"]) for line in order["lines"]] == [
        (line["product_id"], line["quantity"]) for line in seen["items"]
    ]
    assert (order["subtotal"], order["total"]) == ("31.00", "27.90")


async def test_a_visitor_with_no_cart_sees_an_empty_one(client: AsyncClient) -> None:
    seen = await client.get("/cart/")
    assert seen.status_code == 200
    assert (seen.json()["items"], seen.json()["total"]) == ([], "0.00")
    assert await Cart.count() + await GuestCart.count() == 0  # looking creates nothing
    for method, path in [("DELETE", "/cart/discount/"), ("POST", "/cart/merge/")]:
        refused = await client.request(method, path)
        assert refused.status_code in (401, 404), (path, refused.text)


async def test_a_guest_cart_keeps_the_rules_of_a_customers_cart(
    client: AsyncClient, settings: AppSettings
) -> None:
    product = await make_product(stock=5)
    token = await start_guest_cart(client, product, 2)
    too_many = await guest_add(client, product, 4, token)
    assert_problem(too_many, 409, "insufficient_stock")
    settings.cart_max_lines = 1
    other = await guest_add(client, await make_product(), 1, token)
    assert_problem(other, 422, "cart_full")
    added = await asyncio.gather(*(guest_add(client, product, 1, token) for _ in range(3)))
    assert [a.status_code for a in added] == [200] * 3
    cart = (await client.get("/cart/", headers={TOKEN: token})).json()
    assert [line["quantity"] for line in cart["items"]] == [5]
    removed = await client.delete(
        "/cart/remove/", params={"product_id": str(product.id), "quantity": 2},
        headers={TOKEN: token},
    )  # fmt: skip
    assert removed.json()["total_quantity"] == 3


async def test_merging_races_the_customers_own_adds_and_loses_or_doubles_nothing(
    client: AsyncClient, app: FastAPI
) -> None:
    shared, only_guest = await make_product(stock=1000), await make_product(stock=1000)
    tokens = []
    for _ in range(5):
        token = await start_guest_cart(client, shared, 3)
        assert (await guest_add(client, only_guest, 2, token)).status_code == 200
        tokens.append(token)
    customer = await make_user(app)

    answers = await asyncio.gather(
        *(add_to_cart(client, customer, shared, 1) for _ in range(20)),
        *(merge(client, customer, token) for token in tokens),
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert await quantities(customer) == {str(shared.id): 20 + 5 * 3, str(only_guest.id): 10}
    assert await GuestCart.find_all().count() == 0


async def test_two_merges_of_one_token_at_once_count_its_lines_once(
    client: AsyncClient, app: FastAPI
) -> None:
    product = await make_product(stock=100)
    token = await start_guest_cart(client, product, 4)
    customer = await make_user(app)
    answers = await asyncio.gather(*(merge(client, customer, token) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200, 404, 404, 404, 404]
    assert await quantities(customer) == {str(product.id): 4}
    again = await merge(client, customer, token)
    assert_problem(again, 404, "cart_not_found")
    assert await quantities(customer) == {str(product.id): 4}


async def test_lines_that_do_not_fit_are_capped_or_left_out_and_the_answer_says_which(
    client: AsyncClient, app: FastAPI
) -> None:
    scarce, withdrawn, plenty = [await make_product(stock=5) for _ in range(3)]
    token = await start_guest_cart(client, scarce, 4)
    assert (await guest_add(client, withdrawn, 1, token)).status_code == 200
    assert (await guest_add(client, plenty, 2, token)).status_code == 200
    customer = await make_user(app)
    assert (await add_to_cart(client, customer, scarce, 3)).status_code == 200
    await Product.get_pymongo_collection().update_one(
        {"_id": withdrawn.id}, {"$set": {"active": False}}
    )

    merged = await merge(client, customer, token)
    assert merged.status_code == 200, merged.text
    body: dict[str, Any] = merged.json()
    assert body["capped"] == [
        {"product_id": str(scarce.id), "requested": 4, "added": 2, "reason": "insufficient_stock"}
    ]
    assert body["left_out"] == [
        {"product_id": str(withdrawn.id), "requested": 1, "added": 0,
         "reason": "product_unavailable"}
    ]  # fmt: skip
    assert await quantities(customer) == {str(scarce.id): 5, str(plenty.id): 2}


async def test_a_customer_request_uses_the_customers_cart_whatever_cart_token_it_sends(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product()
    token = await start_guest_cart(client, product, 2)
    mine = await client.post(
        "/cart/add/",
        json={"product_id": str(product.id), "quantity": 1},
        headers={**customer.headers, TOKEN: token},
    )
    assert mine.json()["total_quantity"] == 1
    assert TOKEN not in mine.headers
    guest = (await client.get("/cart/", headers={TOKEN: token})).json()
    assert guest["total_quantity"] == 2


async def test_a_guest_cart_expires_and_is_never_read_after(
    client: AsyncClient, clock: ShiftedClock, settings: AppSettings
) -> None:
    product = await make_product()
    token = await start_guest_cart(client, product)
    clock.advance(6 * 86400)  # each change gives the cart its days again
    assert (await guest_add(client, product, 1, token)).status_code == 200
    clock.advance(6 * 86400)
    assert (await client.get("/cart/", headers={TOKEN: token})).json()["total_quantity"] == 2
    clock.advance(settings.guest_cart_days * 86400 + 1)
    assert_problem(await client.get("/cart/", headers={TOKEN: token}), 404, "cart_not_found")
    assert_problem(await guest_add(client, product, 1, token), 404, "cart_not_found")
    [stored] = await GuestCart.find_all().to_list()
    assert stored.items[0].quantity == 2  # the refused add changed nothing
    indexes = await GuestCart.get_pymongo_collection().index_information()
    assert indexes["expires_at_1"]["expireAfterSeconds"] == 0  # and the monitor removes it


@pytest.mark.parametrize(
    "token",
    [
        secrets.token_urlsafe(32),  # the right shape, no cart
        "short",
        "x" * 2000,
        "../../etc/passwd",
        "Bearer%20abc\u00e9",
    ],
)
async def test_a_forged_token_finds_no_cart_and_changes_none(
    client: AsyncClient, token: str
) -> None:  # raw bytes in the header, UTF-8 as a client may send them
    product = await make_product()
    real = await start_guest_cart(client, product, 2)
    headers = {TOKEN: token.encode()}
    assert_problem(await client.get("/cart/", headers=headers), 404, "cart_not_found")
    added = await client.post("/cart/add/", json={"product_id": str(product.id)}, headers=headers)
    assert_problem(added, 404, "cart_not_found")
    assert (await client.get("/cart/", headers={TOKEN: real})).json()["total_quantity"] == 2
    assert await GuestCart.count() == 1


async def test_starting_guest_carts_is_throttled_per_address(
    client: AsyncClient, app: FastAPI, settings: AppSettings
) -> None:
    settings.guest_carts_per_address = 3
    app.state.throttles = Throttles.from_settings(settings)
    try:
        product = await make_product()
        tokens = [await start_guest_cart(client, product) for _ in range(3)]
        refused = await guest_add(client, product)
        assert_problem(refused, 429, "too_many_requests")
        assert "Retry-After" in refused.headers
        assert await GuestCart.count() == 3
        # Carts already started go on.
        assert (await guest_add(client, product, 1, tokens[0])).status_code == 200
    finally:
        app.state.throttles = Throttles.from_settings(app.state.settings)


async def test_a_guest_costs_the_database_what_a_customer_does(
    client: AsyncClient, customer: Account, db_commands: CommandLog
) -> None:
    product = await make_product()
    token = await start_guest_cart(client, product)
    assert (await add_to_cart(client, customer, product, 1)).status_code == 200
    budgets = {}
    for who, headers in [("guest", {TOKEN: token}), ("customer", customer.headers)]:
        db_commands.clear()
        await client.get("/cart/", headers=headers)
        viewed = len(db_commands.commands)
        db_commands.clear()
        await client.post("/cart/add/", json={"product_id": str(product.id)}, headers=headers)
        budgets[who] = (viewed, len(db_commands.commands))
    assert budgets["guest"] == budgets["customer"] == (1, 1), budgets


async def test_cart_reads_of_guests_and_customers_are_served_by_an_index(
    client: AsyncClient, customer: Account, db_commands: CommandLog
) -> None:
    """Each kind of cart is found by a plain unique index of its own collection (a partial
    index is a collection scan on the embedded server)."""
    product = await make_product()
    token = await start_guest_cart(client, product)
    db_commands.clear()
    await client.get("/cart/", headers={TOKEN: token})
    await client.get("/cart/", headers=customer.headers)
    finds = [c for c in db_commands.sent if "find" in c]
    assert [c["find"] for c in finds] == ["guest_carts", "carts"]
    database = Cart.get_pymongo_collection().database
    for command in finds:
        plan = await plan_of(database, command)
        assert "COLLSCAN" not in plan, (command["find"], plan)
        assert "IXSCAN" in plan or "IDHACK" in plan, (command["find"], plan)


async def test_a_guest_cart_shows_stock_that_ran_short_as_a_customers_does(
    client: AsyncClient, settings: AppSettings
) -> None:
    settings.catalog_cache_seconds = 0
    product = await make_product(stock=3)
    token = await start_guest_cart(client, product, 3)
    await set_stock(product, 1)
    cart = (await client.get("/cart/", headers={TOKEN: token})).json()
    assert (cart["items"][0]["quantity"], cart["items"][0]["in_stock"]) == (3, False)
