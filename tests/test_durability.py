"""What the shop acknowledged survives a crash of the database: a real `shop serve` process
under a burst of checkouts and payments, its database killed right after the last answer."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from shop.kit.embedded import EmbeddedMongo, free_port
from tests.factories import seed_database

SHOP = Path(sys.executable).parent / "shop"
KEY = "durability-signing-key-of-sufficient-length"
CUSTOMERS = 40

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "SHOP_MONGODB_URL" in os.environ,
        reason="kills and restarts an embedded database of its own",
    ),
]


def serve(database_url: str, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {
        "SHOP_MONGODB_URL": database_url,
        "SHOP_DATA_DIR": str(data_dir),
        "SHOP_SECRET_KEY": KEY,
        "SHOP_SWEEP_INTERVAL_SECONDS": "86400",
    }
    process = subprocess.Popen([str(SHOP), "serve", "--port", str(port)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/products/", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("shop serve did not answer")


async def burst(base: str, product: str, tokens: list[str]) -> dict[str, str]:
    """Every customer adds, checks out and pays at once; what each answer acknowledged."""
    acknowledged: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def shop_once(token: str) -> None:
            auth = {"Authorization": f"Bearer {token}"}
            added = await client.post(
                "/cart/add/", json={"product_id": product, "quantity": 1}, headers=auth
            )
            assert added.status_code == 200, added.text
            created = await client.post("/order/create/", headers=auth)
            assert created.status_code == 201, created.text
            order_id = created.json()["id"]
            acknowledged[order_id] = "pending_payment"
            paid = await client.post(
                "/order/pay/",
                json={"order_id": order_id, "provider": "mock", "payment_method": "pm_card_visa"},
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert paid.status_code == 200, paid.text
            acknowledged[order_id] = "paid"

        await asyncio.gather(*(shop_once(t) for t in tokens))
    return acknowledged


def test_acknowledged_orders_and_payments_survive_a_database_kill(tmp_path: Path) -> None:
    database = EmbeddedMongo(tmp_path / "db")
    database.start()
    service = None
    try:
        product, tokens = seed_database(database.url, KEY, customers=CUSTOMERS, stock=10_000)
        port = free_port()
        service = serve(database.url, tmp_path, port)
        acknowledged = asyncio.run(burst(f"http://127.0.0.1:{port}", str(product), tokens))
        database.kill()  # right after the last answer
    finally:
        database.kill()
        if service is not None:
            service.kill()
            service.wait()

    with (
        EmbeddedMongo(tmp_path / "db", port=database.port) as restarted,
        MongoClient(restarted.url) as check,
    ):
        db = check["shop"]
        stored: dict[str, Any] = {str(o["_id"]): o["status"] for o in db.orders.find()}
        charges = db.mock_provider_charges.count_documents({"status": "succeeded"})
        stock = db.products.find_one({"_id": product})["stock"]
    assert len(acknowledged) == CUSTOMERS
    assert {order: stored.get(order) for order in acknowledged} == acknowledged
    assert charges == CUSTOMERS
    assert stock == 10_000 - CUSTOMERS
