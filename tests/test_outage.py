"""A database outage gives fast, honest answers, and the service heals by itself: a real
`shop serve` process, its database killed and started again under it."""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from bson import ObjectId

from shop.kit.embedded import EmbeddedMongo, free_port
from tests.factories import seed_database

SHOP = Path(sys.executable).parent / "shop"
KEY = "outage-signing-key-of-sufficient-length-for-hs256"
SELECTION_TIMEOUT, TIMEOUT = 1.0, 3.0
# An answer during the outage comes within the driver's bounds, with a second to spare.
BOUND = SELECTION_TIMEOUT + TIMEOUT + 1.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "SHOP_MONGODB_URL" in os.environ,
        reason="kills and restarts an embedded database of its own",
    ),
]


async def answers(
    base: str, token: str, product: str, order: str, *, at_once: bool
) -> list[tuple[str, int, float]]:
    """One of each kind of request, all at once or in turn: (what, status, seconds taken)."""
    auth = {"Authorization": f"Bearer {token}"}
    requests = {
        "catalog": ("GET", "/products/", None, {}),
        "view cart": ("GET", "/cart/", None, auth),
        "add": ("POST", "/cart/add/", {"product_id": product, "quantity": 1}, auth),
        "checkout": ("POST", "/order/create/", None, auth),
        "pay": (
            "POST",
            "/order/pay/",
            {"order_id": order, "provider": "mock", "payment_method": "pm_card_visa"},
            {**auth, "Idempotency-Key": uuid.uuid4().hex},
        ),
        "history": ("GET", "/order/history/", None, auth),
    }
    async with httpx.AsyncClient(base_url=base, timeout=20) as client:

        async def one(what: str) -> tuple[str, int, float]:
            method, path, body, headers = requests[what]
            started = time.monotonic()
            try:
                response = await client.request(method, path, json=body, headers=headers)
            except httpx.ReadTimeout:
                return what, -1, time.monotonic() - started
            took = time.monotonic() - started
            if response.status_code == 503:
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["code"] == "database_unavailable"
                assert int(response.headers["retry-after"]) > 0
            return what, response.status_code, took

        if at_once:
            return list(await asyncio.gather(*(one(what) for what in requests)))
        return [await one(what) for what in requests]


def test_an_outage_answers_503_in_time_and_the_service_heals_by_itself(tmp_path: Path) -> None:
    database = EmbeddedMongo(tmp_path / "db")
    database.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {
        "SHOP_MONGODB_URL": database.url,
        "SHOP_DATA_DIR": str(tmp_path),
        "SHOP_SECRET_KEY": KEY,
        "SHOP_DB_SELECTION_TIMEOUT_SECONDS": str(SELECTION_TIMEOUT),
        "SHOP_DB_TIMEOUT_SECONDS": str(TIMEOUT),
    }
    service = subprocess.Popen([str(SHOP), "serve", "--port", str(port)], env=env)
    try:
        product, (token,) = seed_database(database.url, KEY, customers=1, stock=100)
        up = wait_for(base, "/products/", 200, 60)
        assert up, "shop serve did not answer"
        order = str(ObjectId())

        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200
        database.kill()
        during = asyncio.run(answers(base, token, str(product), order, at_once=True))
        for what, status, took in during:
            assert status == 503, (what, status)
            assert took < BOUND, (what, took)
        started = time.monotonic()
        not_ready = httpx.get(f"{base}/ready", timeout=10)
        assert time.monotonic() - started < 3.5  # its own short bound
        assert (not_ready.status_code, not_ready.json()["code"]) == (503, "database_unavailable")
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200  # alive all the same

        database = EmbeddedMongo(tmp_path / "db", port=database.port)
        database.start()
        assert wait_for(base, "/products/", 200, 30), "the service did not heal"
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200
        after = asyncio.run(answers(base, token, str(product), order, at_once=False))
        assert {what: status for what, status, _ in after} == {
            "catalog": 200,
            "view cart": 200,
            "add": 200,
            "checkout": 201,
            "pay": 404,  # no such order: the database answered
            "history": 200,
        }

        database.kill()  # SIGTERM with the database down still stops the service promptly
        service.send_signal(signal.SIGTERM)
        started = time.monotonic()
        service.wait(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        database.kill()
        if service.poll() is None:
            service.kill()
            service.wait()


def wait_for(base: str, path: str, status: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + path, timeout=2).status_code == status:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False
