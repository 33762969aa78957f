"""Builders and test doubles shared by the tests. Users get a token without going through
argon2 each time."""

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from itertools import count
from typing import Any

from beanie import PydanticObjectId
from bson import Decimal128, ObjectId
from fastapi import FastAPI
from httpx import AsyncClient, Response
from pwdlib import PasswordHash
from pymongo import MongoClient

from shop.accounts.models import Role, User
from shop.accounts.security import Principal, create_access_token
from shop.catalog.models import Product
from shop.discounts.models import Discount
from shop.payments.mock import MockProvider, ProviderCharge, ProviderRefund
from shop.payments.provider import Charge, PaymentProvider

PASSWORD = "correct horse battery"
_serial = count(1)


@cache
def _password_hash() -> str:
    return PasswordHash.recommended().hash(PASSWORD)


@dataclass
class Account:
    user: User
    token: str

    @property
    def id(self) -> PydanticObjectId:
        assert self.user.id is not None
        return self.user.id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_user(app: FastAPI, role: Role = Role.customer) -> Account:
    user = User(email=f"user{next(_serial)}@example.com", password_hash=_password_hash(), role=role)
    await user.insert()
    assert user.id is not None
    token = create_access_token(Principal(user.id, role), app.state.signing_key, 30)
    return Account(user, token)


async def make_product(
    *, price: str = "10.00", stock: int = 10, name: str | None = None, active: bool = True
) -> Product:
    product = Product(
        name=name or f"Product {next(_serial)}",
        price=Decimal(price),
        stock=stock,
        active=active,
    )
    await product.insert()
    return product


async def stock_of(product: Product) -> int:
    fresh = await Product.get(product.id)
    assert fresh is not None
    return fresh.stock


async def grow_first_line_elsewhere(carts: Any, user_id: PydanticObjectId, units: int) -> None:
    """What another worker's add does to a customer's cart, through ``carts``: its first line
    grows by ``units`` and the cart gets a revision this process never saw."""
    await carts.update_one(
        {"_id": user_id},
        {"$inc": {"items.0.quantity": units}, "$set": {"revision": ObjectId()}},
    )


async def set_stock(product: Product, stock: int) -> None:
    await Product.get_pymongo_collection().update_one(
        {"_id": product.id}, {"$set": {"stock": stock}}
    )


async def add_to_cart(
    client: AsyncClient, account: Account, product: Product, quantity: int = 1
) -> Response:
    return await client.post(
        "/cart/add/",
        json={"product_id": str(product.id), "quantity": quantity},
        headers=account.headers,
    )


def assert_problem(response: Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def place_order(
    client: AsyncClient, account: Account, *items: tuple[Product, int]
) -> dict[str, Any]:
    """Fill the cart and check out; returns the created order as the API shows it."""
    for product, quantity in items:
        added = await add_to_cart(client, account, product, quantity)
        assert added.status_code == 200, added.text
    created = await client.post("/order/create/", headers=account.headers)
    assert created.status_code == 201, created.text
    order: dict[str, Any] = created.json()
    return order


async def pay(
    client: AsyncClient,
    account: Account,
    order_id: str,
    method: str = "pm_card_visa",
    key: str | None = None,
    provider: str = "mock",
) -> Response:
    headers = {**account.headers, "Idempotency-Key": key or uuid.uuid4().hex}
    return await client.post(
        "/order/pay/",
        json={"order_id": order_id, "provider": provider, "payment_method": method},
        headers=headers,
    )


async def charges_for(order_id: str) -> list[ProviderCharge]:
    return await ProviderCharge.find({"key": {"$regex": f"^order-{order_id}-"}}).to_list()


async def make_discount(**fields: Any) -> Discount:
    """A discount straight into the database; ``value`` and money fields as strings."""
    for name in ("value", "min_subtotal"):
        if isinstance(fields.get(name), str):
            fields[name] = Decimal(fields[name])
    fields.setdefault("name", f"Discount {next(_serial)}")
    discount = Discount(**fields)
    await discount.insert()
    return discount


async def apply_code(client: AsyncClient, account: Account, code: str) -> Response:
    return await client.post("/cart/discount/", json={"code": code}, headers=account.headers)


async def view_cart(client: AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.get("/cart/", headers=account.headers)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def make_paid_order(
    client: AsyncClient, account: Account, *items: tuple[Product, int]
) -> dict[str, Any]:
    order = await place_order(client, account, *items)
    paid = await pay(client, account, order["id"])
    assert paid.status_code == 200, paid.text
    body: dict[str, Any] = paid.json()
    return body


async def request_return(
    client: AsyncClient,
    account: Account,
    order_id: str,
    *items: tuple[Product, int],
    key: str | None = None,
    reason: str = "no_longer_needed",
) -> Response:
    return await client.post(
        f"/order/{order_id}/return/",
        json={
            "items": [{"product_id": str(p.id), "quantity": q, "reason": reason} for p, q in items]
        },
        headers={**account.headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def refunds_for(order: dict[str, Any]) -> list[ProviderRefund]:
    return await ProviderRefund.find({"payment_id": order["payment"]["payment_id"]}).to_list()


def seed_database(
    database_url: str, key: str, *, customers: int, stock: int, db_name: str = "shop"
) -> tuple[ObjectId, list[str]]:
    """A product and customers straight into the database of a real `shop serve` process:
    the product's id, and each customer's access token signed with the service's ``key``."""
    with MongoClient(database_url) as client:
        db = client[db_name]
        product = db.products.insert_one(
            {
                "name": "Mug",
                "description": "",
                "price": Decimal128(Decimal("5.00")),
                "stock": stock,
                "active": True,
            }
        ).inserted_id
        users = db.users.insert_many(
            [
                {"email": f"c{n}@example.com", "password_hash": "x", "role": "customer"}
                for n in range(customers)
            ]
        ).inserted_ids
    tokens = [
        create_access_token(Principal(PydanticObjectId(u), Role.customer), key, 30) for u in users
    ]
    return product, tokens


@contextmanager
def paying_through(app: FastAPI, providers: Mapping[str, PaymentProvider]) -> Iterator[None]:
    """The service takes payments through ``providers`` inside the block, then through its
    own again, however the block ends."""
    own = app.state.payment_providers
    app.state.payment_providers = dict(providers)
    try:
        yield
    finally:
        app.state.payment_providers = own


class PausingProvider(MockProvider):
    """The simulated provider, holding each charge until ``release()``: the test decides what
    happens while a charge is running."""

    def __init__(self) -> None:
        super().__init__()
        self.charging = asyncio.Event()
        self._release = asyncio.Event()

    def release(self) -> None:
        self._release.set()

    async def charge(
        self, *, key: str, amount: Decimal, currency: str, method: str, reference: str = ""
    ) -> Charge:
        self.charging.set()
        await self._release.wait()
        return await super().charge(
            key=key, amount=amount, currency=currency, method=method, reference=reference
        )
