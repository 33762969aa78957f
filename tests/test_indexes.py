"""The indexes the models declare exist on the server after start-up."""

from typing import Any

from fastapi import FastAPI

from shop.accounts.models import User
from shop.cart.models import Cart
from shop.idempotency import IdempotencyRecord
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
