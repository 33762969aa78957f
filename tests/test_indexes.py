"""The indexes the models declare exist on the server after start-up."""

import logging
from typing import Any

import pytest
from fastapi import FastAPI

from shop.accounts.models import User
from shop.cart.models import Cart
from shop.idempotency import IdempotencyRecord
from shop.kit.config import AppSettings
from shop.kit.db import init_database
from shop.main import DOCUMENTS
from shop.orders.models import PendingOrder


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


async def test_one_account_per_email_and_one_cart_per_user(app: FastAPI) -> None:
    assert (await indexes_of(User))["email"]["unique"] is True
    assert (await indexes_of(Cart))["user_id"]["unique"] is True


async def test_an_index_built_to_an_older_definition_is_built_anew_at_start_up(
    app: FastAPI, base_settings: AppSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A TTL changed, unique dropped: start-up rebuilds them as declared instead of failing
    with IndexOptionsConflict."""
    pending = PendingOrder.get_pymongo_collection()
    carts = Cart.get_pymongo_collection()
    await pending.drop_index("expires_at_1")
    await pending.create_index("expires_at", expireAfterSeconds=3600)
    await carts.drop_index("user_id_1")
    await carts.create_index("user_id")  # no longer unique
    assert (await indexes_of(PendingOrder))["expires_at"]["expireAfterSeconds"] == 3600

    with caplog.at_level(logging.WARNING, logger="shop.kit.db"):
        await init_database(app.state.mongo, base_settings.db_name, DOCUMENTS)

    assert (await indexes_of(PendingOrder))["expires_at"]["expireAfterSeconds"] == 0
    assert (await indexes_of(Cart))["user_id"]["unique"] is True
    rebuilt = {r.getMessage().split()[1] for r in caplog.records}
    assert rebuilt == {"pending_orders.expires_at_1", "carts.user_id_1"}
    # Nothing else changed, so nothing more is rebuilt on the next start.
    await init_database(app.state.mongo, base_settings.db_name, DOCUMENTS)
    assert len(caplog.records) == 2
