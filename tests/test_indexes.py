"""The indexes the models declare exist on the server after start-up."""

import logging
from typing import Any

import pytest
from bson import ObjectId
from fastapi import FastAPI
from httpx import AsyncClient

from shop.accounts.models import User
from shop.cart.models import OLD_CUSTOMER_INDEX, Cart, GuestCart
from shop.idempotency import IdempotencyRecord
from shop.kit.clock import utcnow
from shop.kit.config import AppSettings
from shop.kit.db import init_database
from shop.main import DOCUMENTS
from shop.orders.models import PendingOrder
from tests.factories import add_to_cart, make_product, make_user


async def indexes_of(model: Any) -> dict[str, dict[str, Any]]:
    info: dict[str, dict[str, Any]] = await model.get_pymongo_collection().index_information()
    return {
        str(spec["key"][0][0]) if len(spec["key"]) == 1 else name: spec
        for name, spec in info.items()
    }


async def test_payment_windows_and_idempotency_keys_expire_by_ttl(app: FastAPI) -> None:
    for model in (PendingOrder, IdempotencyRecord):
        ttl = (await indexes_of(model))["expires_at"]
        assert ttl["expireAfterSeconds"] == 0


async def test_one_account_per_email_and_one_cart_per_user_or_guest(app: FastAPI) -> None:
    assert (await indexes_of(User))["email"]["unique"] is True
    assert list(await indexes_of(Cart)) == ["_id"]  # a customer's cart is keyed by their id
    assert (await indexes_of(GuestCart))["guest"]["unique"] is True


async def test_carts_stored_under_a_random_id_are_keyed_by_their_customer_once(
    client: AsyncClient, app: FastAPI, base_settings: AppSettings
) -> None:
    """A database from before: each cart under an id of its own, found by a unique index on
    user_id. Start-up moves every cart, drops that index, and the next start does nothing."""
    customer = await make_user(app)
    product = await make_product(stock=10)
    carts = Cart.get_pymongo_collection()
    await carts.create_index("user_id", unique=True)
    others = [ObjectId() for _ in range(3)]
    for user_id in [customer.id, *others]:
        line = {"product_id": product.id, "quantity": 2, "added_at": utcnow()}
        await carts.insert_one(
            {"user_id": user_id, "items": [line], "discount_code": None, "updated_at": utcnow()}
        )

    assert await Cart.key_by_customer() == 4
    assert sorted(d["_id"] for d in await carts.find().to_list()) == sorted([customer.id, *others])
    assert OLD_CUSTOMER_INDEX not in await carts.index_information()
    assert await Cart.key_by_customer() == 0
    cart = await add_to_cart(client, customer, product, 1)
    assert [line["quantity"] for line in cart.json()["items"]] == [3]
    assert await carts.count_documents({}) == 4


async def test_an_index_built_to_an_older_definition_is_built_anew_at_start_up(
    app: FastAPI, base_settings: AppSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A TTL changed, unique dropped: start-up rebuilds them as declared instead of failing
    with IndexOptionsConflict."""
    pending = PendingOrder.get_pymongo_collection()
    carts = GuestCart.get_pymongo_collection()
    await pending.drop_index("expires_at_1")
    await pending.create_index("expires_at", expireAfterSeconds=3600)
    await carts.drop_index("guest_1")
    await carts.create_index("guest")  # no longer unique
    assert (await indexes_of(PendingOrder))["expires_at"]["expireAfterSeconds"] == 3600

    with caplog.at_level(logging.WARNING, logger="shop.kit.db"):
        await init_database(app.state.mongo, base_settings.db_name, DOCUMENTS)

    assert (await indexes_of(PendingOrder))["expires_at"]["expireAfterSeconds"] == 0
    assert (await indexes_of(GuestCart))["guest"]["unique"] is True
    rebuilt = {r.getMessage().split()[1] for r in caplog.records}
    assert rebuilt == {"pending_orders.expires_at_1", "guest_carts.guest_1"}
    # Nothing else changed, so nothing more is rebuilt on the next start.
    await init_database(app.state.mongo, base_settings.db_name, DOCUMENTS)
    assert len(caplog.records) == 2
