"""The cart's cache of products and discounts: how stale it may be, and what never uses it.

"Another process" is a second MongoDB client: its writes are invisible to this service's
command listener, exactly like another worker's or another host's.
"""

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from fastapi import FastAPI
from httpx import AsyncClient
from pymongo.asynchronous.collection import AsyncCollection

from shop.accounts.models import Role
from shop.catalog.models import Product
from shop.catalog_cache import CatalogCache
from shop.discounts.models import Discount
from shop.orders.models import Order
from tests.conftest import CommandLog
from tests.factories import (
    Account,
    add_to_cart,
    assert_problem,
    make_product,
    make_user,
    place_order,
    stock_of,
    view_cart,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: FastAPI) -> Iterator[Clock]:
    cache: CatalogCache = app.state.catalog
    fake, real = Clock(), cache.clock
    cache.clock = fake
    yield fake
    cache.clock = real


def line_of(cart: dict[str, Any]) -> dict[str, Any]:
    (line,) = cart["items"]
    return dict(line)


class HeldRead:
    """``Product.many`` held once it has its answer, until ``release()``: a forced
    interleaving. Only the first read is held; ``started()`` waits for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read_done, self._released = asyncio.Event(), asyncio.Event()
        self._monkeypatch, self._real = monkeypatch, Product.many

        async def many_then_wait(ids: list[Any], session: Any = None) -> dict[Any, Product]:
            found = await self._real(ids, session)
            self.read_done.set()
            await self._released.wait()
            return found

        monkeypatch.setattr(Product, "many", many_then_wait)

    async def started(self) -> None:
        await self.read_done.wait()
        self._monkeypatch.setattr(Product, "many", self._real)  # later reads go through

    def release(self) -> None:
        self._released.set()


async def test_a_price_changed_elsewhere_shows_in_the_cart_within_the_bound(
    client: AsyncClient, app: FastAPI, clock: Clock, elsewhere: Any, customer: Account
) -> None:
    product = await make_product(price="10.00")
    await add_to_cart(client, customer, product, 1)
    products: AsyncCollection[dict[str, Any]] = elsewhere.products
    await products.update_one({"_id": product.id}, {"$set": {"price": Decimal128("12.00")}})

    clock.now += app.state.catalog.max_age - 0.1
    assert line_of(await view_cart(client, customer))["unit_price"] == "10.00"
    clock.now += 0.2
    assert line_of(await view_cart(client, customer))["unit_price"] == "12.00"


async def test_a_sale_started_elsewhere_shows_in_the_cart_within_the_bound(
    client: AsyncClient, app: FastAPI, clock: Clock, elsewhere: Any, customer: Account
) -> None:
    product = await make_product(price="10.00")
    await add_to_cart(client, customer, product, 1)
    await elsewhere.discounts.insert_one(
        {
            "name": "Half off",
            "scope": "product",
            "kind": "percent",
            "value": Decimal128("50"),
            "product_ids": [product.id],
            "code": None,
            "times_used": 0,
            "active": True,
        }
    )
    assert (await view_cart(client, customer))["total"] == "10.00"
    clock.now += app.state.catalog.max_age + 0.1
    assert (await view_cart(client, customer))["total"] == "5.00"


async def test_this_process_own_changes_show_at_once(
    client: AsyncClient, clock: Clock, customer: Account, admin: Account
) -> None:
    product = await make_product(price="10.00")
    await add_to_cart(client, customer, product, 1)

    changed = await client.patch(
        f"/products/{product.id}", json={"price": "8.00"}, headers=admin.headers
    )
    assert changed.status_code == 200
    assert line_of(await view_cart(client, customer))["unit_price"] == "8.00"
    sale = {
        "name": "Quarter off",
        "scope": "product",
        "kind": "percent",
        "value": "25",
        "product_ids": [str(product.id)],
    }
    assert (await client.post("/discounts/", json=sale, headers=admin.headers)).status_code == 201
    assert (await view_cart(client, customer))["total"] == "6.00"
    await client.delete(f"/products/{product.id}", headers=admin.headers)
    assert line_of(await view_cart(client, customer))["available"] is False


async def test_a_checkout_reservation_shows_in_other_carts_at_once(
    client: AsyncClient, app: FastAPI, clock: Clock
) -> None:
    """Stock reserved inside a transaction: dropped from the cache when it commits."""
    waiting, buyer = await make_user(app), await make_user(app)
    product = await make_product(stock=1)
    await add_to_cart(client, waiting, product, 1)
    assert line_of(await view_cart(client, waiting))["in_stock"] is True
    await place_order(client, buyer, (product, 1))
    assert line_of(await view_cart(client, waiting))["in_stock"] is False


async def test_checkout_prices_with_the_database_price_not_the_cached_one(
    client: AsyncClient, clock: Clock, elsewhere: Any, customer: Account
) -> None:
    product = await make_product(price="10.00", stock=5)
    await add_to_cart(client, customer, product, 2)
    await elsewhere.products.update_one(
        {"_id": product.id}, {"$set": {"price": Decimal128("12.00")}}
    )
    assert (await view_cart(client, customer))["total"] == "20.00"  # still the cached price

    created = await client.post("/order/create/", headers=customer.headers)
    assert created.status_code == 201, created.text
    assert (created.json()["lines"][0]["unit_price"], created.json()["total"]) == ("12.00", "24.00")
    stored = await Order.get(created.json()["id"])
    assert stored is not None and Decimal(stored.total) == Decimal("24.00")


async def test_checkout_refuses_stock_the_cache_still_shows(
    client: AsyncClient, clock: Clock, elsewhere: Any, customer: Account
) -> None:
    product = await make_product(stock=5)
    await add_to_cart(client, customer, product, 2)
    await elsewhere.products.update_one({"_id": product.id}, {"$set": {"stock": 1}})
    assert line_of(await view_cart(client, customer))["in_stock"] is True  # cached

    refused = await client.post("/order/create/", headers=customer.headers)
    assert_problem(refused, 409, "insufficient_stock")
    assert await stock_of(product) == 1
    assert line_of(await view_cart(client, customer))["quantity"] == 2  # the cart is kept
    assert await Order.count() == 0


async def test_with_the_cache_off_the_cart_reads_the_database_every_time(
    client: AsyncClient, app: FastAPI, elsewhere: Any
) -> None:
    cache: CatalogCache = app.state.catalog
    cache.max_age, max_age = 0, cache.max_age
    try:
        account = await make_user(app)
        product = await make_product(price="10.00")
        await add_to_cart(client, account, product, 1)
        await elsewhere.products.update_one(
            {"_id": product.id}, {"$set": {"price": Decimal128("11.00")}}
        )
        assert line_of(await view_cart(client, account))["unit_price"] == "11.00"
    finally:
        cache.max_age = max_age


async def test_a_read_that_overlaps_a_write_does_not_store_what_it_read(
    client: AsyncClient,
    app: FastAPI,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    customer: Account,
) -> None:
    """Forced interleaving: the cache's read has its answer, then an admin's write lands
    before the read stores it. The old price must not stay cached."""
    admin = await make_user(app, Role.admin)
    product = await make_product(price="10.00")
    await add_to_cart(client, customer, product, 1)
    app.state.catalog.forget("products", None)

    held = HeldRead(monkeypatch)
    view = asyncio.create_task(view_cart(client, customer))
    await held.started()
    patched = await client.patch(
        f"/products/{product.id}", json={"price": "9.00"}, headers=admin.headers
    )
    assert patched.status_code == 200
    held.release()
    assert line_of(await view)["unit_price"] == "10.00"  # read before the write: fine once
    assert line_of(await view_cart(client, customer))["unit_price"] == "9.00"  # never again


async def test_a_read_between_a_transaction_write_and_its_commit_is_dropped_at_commit(
    client: AsyncClient, app: FastAPI, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: inside checkout, after the stock is reserved and before the
    commit, another customer's cart caches the stock as committed so far (still there)."""
    waiting, buyer = await make_user(app), await make_user(app)
    product = await make_product(stock=1)
    await add_to_cart(client, waiting, product, 1)
    app.state.catalog.forget("products", None)
    real_redeem = Discount.redeem
    seen_inside: list[bool] = []

    async def view_then_redeem(*args: Any) -> None:
        seen_inside.append(line_of(await view_cart(client, waiting))["in_stock"])
        await real_redeem(*args)

    monkeypatch.setattr(Discount, "redeem", view_then_redeem)
    await place_order(client, buyer, (product, 1))
    assert seen_inside == [True]  # the reservation was not committed yet
    assert line_of(await view_cart(client, waiting))["in_stock"] is False


async def test_views_that_miss_the_same_entries_at_once_share_one_read(
    client: AsyncClient, app: FastAPI, clock: Clock, db_commands: CommandLog
) -> None:
    """When an entry expires under load, every request in flight misses it together: they
    wait for one read of the products and one of the discounts, not one each."""
    product, other = await make_product(price="10.00"), await make_product(price="4.00")
    shoppers = [await make_user(app) for _ in range(10)]
    for shopper in shoppers:
        await add_to_cart(client, shopper, product, 1)
        await add_to_cart(client, shopper, other, 2)
    clock.now += app.state.catalog.max_age + 1  # every entry has expired

    db_commands.clear()
    carts = await asyncio.gather(*(view_cart(client, shopper) for shopper in shoppers))
    reads = sorted(f"{name} {collection}" for name, collection in db_commands.commands)
    assert reads == ["find carts"] * 10 + ["find discounts", "find products"]
    assert {c["total"] for c in carts} == {"18.00"}


async def test_a_request_after_a_write_does_not_wait_for_a_read_begun_before_it(
    client: AsyncClient,
    app: FastAPI,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    customer: Account,
) -> None:
    """A read in flight is shared only until this process writes what it reads: a view that
    starts after an admin's price change reads the new price, while the read begun before
    the change is still waiting for its answer."""
    admin, second = await make_user(app, Role.admin), await make_user(app)
    product = await make_product(price="10.00")
    await add_to_cart(client, customer, product, 1)
    await add_to_cart(client, second, product, 1)
    app.state.catalog.forget("products", None)

    held = HeldRead(monkeypatch)
    before = asyncio.create_task(view_cart(client, customer))
    await held.started()
    patched = await client.patch(
        f"/products/{product.id}", json={"price": "9.00"}, headers=admin.headers
    )
    assert patched.status_code == 200
    after = await asyncio.wait_for(view_cart(client, second), timeout=5)
    assert line_of(after)["unit_price"] == "9.00"
    assert not before.done()  # still held: the view after the write did not wait for it
    held.release()
    assert line_of(await before)["unit_price"] == "10.00"
    assert line_of(await view_cart(client, customer))["unit_price"] == "9.00"
