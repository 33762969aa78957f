"""A cart's revision: every write gives it a new one, and a change to the state this process
last saw is saved only if the cart is still in it."""

import asyncio
from typing import Any

from bson import ObjectId
from fastapi import FastAPI
from httpx import AsyncClient

from shop.cart.models import Cart, GuestCart
from shop.discounts.models import DiscountKind, DiscountScope
from tests.conftest import CommandLog
from tests.factories import (
    Account,
    add_to_cart,
    assert_problem,
    make_discount,
    make_product,
    make_user,
    place_order,
    view_cart,
)

TOKEN = "X-Cart-Token"
CARTS = (Cart.Settings.name, GuestCart.Settings.name)


def revisions_written(sent: list[dict[str, Any]]) -> list[Any]:
    """The revision each write to a cart sent; None for one that sent none."""
    written = []
    for command in sent:
        if command.get("update") in CARTS:
            for statement in command["updates"]:
                written.append(statement["u"].get("$set", {}).get("revision"))
        if command.get("insert") in CARTS:
            written.extend(document.get("revision") for document in command["documents"])
    return written


async def test_every_write_to_a_cart_gives_it_a_new_revision(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    mug, cap = await make_product(stock=50), await make_product(stock=50)
    await make_discount(scope=DiscountScope.cart, kind=DiscountKind.percent, value="5", code="FIVE")
    db_commands.clear()

    guest = await client.post("/cart/add/", json={"product_id": str(mug.id)})  # insert, add
    headers = {TOKEN: guest.headers[TOKEN]}
    await client.post("/cart/add/", json={"product_id": str(cap.id)}, headers=headers)
    await client.delete(f"/cart/remove/?product_id={cap.id}", headers=headers)
    await client.post("/cart/discount/", json={"code": "FIVE"}, headers=headers)
    await client.post("/cart/merge/", headers={**customer.headers, **headers})
    await add_to_cart(client, customer, mug, 2)  # more of a line
    await add_to_cart(client, customer, cap, 1)  # a new line
    # Another process's change: the next write here misses and goes the way that reads.
    await Cart.get_pymongo_collection().update_one(
        {"user_id": customer.id}, {"$set": {"revision": ObjectId()}}
    )
    await add_to_cart(client, customer, mug, 1)
    await client.delete(f"/cart/remove/?product_id={mug.id}&quantity=1", headers=customer.headers)
    await client.delete("/cart/discount/", headers=customer.headers)
    await place_order(client, customer)

    written = revisions_written(db_commands.sent)
    assert len(written) >= 12, written
    assert None not in written, written
    assert len(set(written)) == len(written)  # never the same twice
    assert (await Cart.of_user(customer.id)).is_empty


async def test_concurrent_changes_to_a_seen_cart_all_count(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    """Every change starts from the same remembered state: one lands on it, the others find
    the cart changed and add to it as it is."""
    mug, cap = await make_product(stock=1_000), await make_product(stock=1_000)
    await add_to_cart(client, customer, mug, 10)
    await view_cart(client, customer)

    async def remove_one() -> int:
        url = f"/cart/remove/?product_id={mug.id}&quantity=1"
        return (await client.delete(url, headers=customer.headers)).status_code

    changes = [add_to_cart(client, customer, p, 1) for _ in range(10) for p in (mug, cap)]
    answers = await asyncio.gather(*changes, *(remove_one() for _ in range(5)))
    statuses = [getattr(a, "status_code", a) for a in answers]
    assert statuses == [200] * 25, statuses
    cart = await Cart.of_user(customer.id)
    assert (cart.quantity_of(mug.id), cart.quantity_of(cap.id)) == (10 + 10 - 5, 10)
    assert (await add_to_cart(client, customer, cap, 1)).json()["total_quantity"] == 26


async def test_concurrent_adds_to_a_seen_cart_stop_exactly_at_stock(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=7)
    await add_to_cart(client, customer, product, 1)
    answers = await asyncio.gather(*(add_to_cart(client, customer, product) for _ in range(15)))
    assert sorted(a.status_code for a in answers) == [200] * 6 + [409] * 9
    assert (await Cart.of_user(customer.id)).quantity_of(product.id) == 7


async def test_a_refusal_on_the_state_last_seen_is_judged_again_on_the_cart_as_it_is(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    product = await make_product(stock=5)
    await add_to_cart(client, customer, product, 5)
    assert_problem(await add_to_cart(client, customer, product, 1), 409, "insufficient_stock")
    # Another process takes the line off: this one still remembers 5 of 5 in the cart.
    await Cart.get_pymongo_collection().update_one(
        {"user_id": customer.id},
        {"$pull": {"items": {"product_id": product.id}}, "$set": {"revision": ObjectId()}},
    )

    added = await add_to_cart(client, customer, product, 2)
    assert added.status_code == 200, added.text
    assert [(line["product_id"], line["quantity"]) for line in added.json()["items"]] == [
        (str(product.id), 2)
    ]
    someone = await make_user(app)
    assert (await add_to_cart(client, someone, product, 3)).status_code == 200
    assert (await Cart.of_user(customer.id)).quantity_of(product.id) == 2
