"""The embedded database is kept running by `shop serve`, never outlives it, and a server
left behind by a dead process is stopped before a new one starts on the same files."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from shop.kit.embedded import EmbeddedMongo, _alive, _server_program, free_port
from tests.factories import assert_problem, seed_database
from tests.processes import (
    answers,
    database_pid,
    log_of,
    port_closed,
    start_shop,
    stop,
    workers_of,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and prctl"),
]


def test_a_database_that_dies_is_restarted_under_the_same_shop(tmp_path: Path) -> None:
    port = free_port()
    shop = start_shop(tmp_path, port)
    try:
        before = answers(port, 60)
        assert before, "shop serve did not answer"
        pid, _ = database_pid(tmp_path)
        os.kill(pid, signal.SIGKILL)
        assert answers(port, 30) == before  # same shop process, same data
        assert shop.poll() is None
        assert database_pid(tmp_path)[0] != pid
    finally:
        log = stop(shop, tmp_path)
    assert shop.returncode == 0, log
    assert "restarted" in log


def test_a_killed_shop_takes_its_database_along_and_starts_again(tmp_path: Path) -> None:
    """kill -9 of shop serve: its database goes too; the next start answers within seconds
    with everything acknowledged, and a retry with the original key gets the original answer."""
    port = free_port()
    shop = start_shop(tmp_path, port)
    try:
        before = answers(port, 60)
        assert before, "shop serve did not answer"
        base = f"http://127.0.0.1:{port}"
        auth, order_id, paid = buy_and_pay(base, before[0])
        pid, database_port = database_pid(tmp_path)
    finally:
        shop.kill()  # SIGKILL: no shutdown code runs
        shop.wait(timeout=30)
    assert port_closed(database_port, 15), "the embedded database outlived its shop"
    assert not _alive(pid)

    again = start_shop(tmp_path, port := free_port())
    try:
        started = time.monotonic()
        assert answers(port, 60) == before
        assert time.monotonic() - started < 30
        base = f"http://127.0.0.1:{port}"
        stored = httpx.get(f"{base}/order/{order_id}/", headers=auth, timeout=10)
        assert stored.json()["status"] == "paid"
        retried = httpx.post(
            f"{base}/order/pay/",
            json={"order_id": order_id, "provider": "mock", "payment_method": "pm_card_visa"},
            headers={**auth, "Idempotency-Key": "the-first-key"},
            timeout=10,
        )
        assert retried.status_code == 200
        assert retried.headers["idempotent-replayed"] == "true"
        assert retried.json() == paid
    finally:
        stop(again, tmp_path)


def test_a_killed_worker_is_replaced_while_the_other_keeps_answering(tmp_path: Path) -> None:
    port = free_port()
    shop = start_shop(tmp_path, port, workers=2)
    try:
        before = answers(port, 60)
        assert before, "shop serve did not answer"
        base = f"http://127.0.0.1:{port}"
        auth, order_id, _ = buy_and_pay(base, before[0])
        workers = workers_of(shop)
        assert len(workers) == 2
        victim = workers.pop()
        os.kill(victim, signal.SIGKILL)
        assert answers(port, 5) == before  # the other worker answers meanwhile
        deadline = time.monotonic() + 15
        while len(replaced := workers_of(shop)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(replaced) == 2 and victim not in replaced
        for _ in range(10):  # both workers see the acknowledged payment
            stored = httpx.get(f"{base}/order/{order_id}/", headers=auth, timeout=10)
            assert stored.json()["status"] == "paid"
        assert shop.poll() is None
    finally:
        log = stop(shop, tmp_path)
    assert shop.returncode == 0, log
    assert f"Child process [{victim}] died" in log


def buy_and_pay(base: str, product: str) -> tuple[dict[str, str], str, dict[str, Any]]:
    """A new customer orders one unit and pays with the key ``the-first-key``."""
    credentials = {"email": "ann@example.com", "password": "correct horse"}
    assert httpx.post(f"{base}/auth/register", json=credentials).status_code == 201
    login = {"username": credentials["email"], "password": credentials["password"]}
    token = httpx.post(f"{base}/auth/token", data=login, timeout=10).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    added = httpx.post(f"{base}/cart/add/", json={"product_id": product}, headers=auth)
    assert added.status_code == 200
    order_id = httpx.post(f"{base}/order/create/", headers=auth, timeout=10).json()["id"]
    paid = httpx.post(
        f"{base}/order/pay/",
        json={"order_id": order_id, "provider": "mock", "payment_method": "pm_card_visa"},
        headers={**auth, "Idempotency-Key": "the-first-key"},
        timeout=10,
    )
    assert paid.status_code == 200, paid.text
    return auth, order_id, paid.json()


def test_shop_serve_exits_non_zero_when_its_database_cannot_come_back(tmp_path: Path) -> None:
    port = free_port()
    shop = start_shop(tmp_path, port)
    squatter = socket.socket()
    try:
        assert answers(port, 60), "shop serve did not answer"
        pid, database_port = database_pid(tmp_path)
        os.kill(pid, signal.SIGKILL)
        assert port_closed(database_port, 5)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", database_port))  # the restarted server cannot listen
        squatter.listen()
        shop.wait(timeout=90)
        log = log_of(tmp_path)
    finally:
        squatter.close()
        if shop.poll() is None:
            shop.kill()
    assert shop.returncode != 0
    assert "could not be restarted" in log


def test_a_server_left_by_a_dead_process_is_stopped_before_a_new_one_starts(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "db"
    storage.mkdir()
    port = free_port()
    stale = subprocess.Popen(
        [_server_program(), "--port", str(port), "--storage-path", str(storage)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gone = subprocess.run([sys.executable, "-c", "pass"], check=True)  # a parent that died
    dead_parent = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_parent.wait()
    assert gone.returncode == 0
    Path(f"{storage}.pid").write_text(
        json.dumps({"pid": stale.pid, "parent": dead_parent.pid, "port": port})
    )
    with MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true") as client:
        client.shop.things.insert_one({"kept": True})  # the stale server is up and writing
    try:
        with EmbeddedMongo(storage) as fresh, MongoClient(fresh.url) as client:
            assert stale.wait(timeout=30) is not None  # stopped, not left running
            assert client.shop.things.find_one({}, {"_id": 0}) == {"kept": True}
    finally:
        if stale.poll() is None:
            stale.kill()


async def shop_under_load(
    base: str, product: str, tokens: list[str], stop: asyncio.Event
) -> tuple[list[tuple[float, int, float]], dict[str, str]]:
    """Customers loop add → checkout → pay until ``stop``: every answer (when, status,
    seconds taken) and what the answers acknowledged (order id → status)."""
    seen: list[tuple[float, int, float]] = []
    acknowledged: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            started = time.monotonic()
            response = await client.request(method, path, **kwargs)
            seen.append((started, response.status_code, time.monotonic() - started))
            return response

        async def customer(token: str) -> None:
            auth = {"Authorization": f"Bearer {token}"}
            while not stop.is_set():
                body = {"product_id": product, "quantity": 1}
                if (await call("POST", "/cart/add/", json=body, headers=auth)).status_code != 200:
                    await asyncio.sleep(0.05)
                    continue
                created = await call("POST", "/order/create/", headers=auth)
                if created.status_code != 201:
                    continue
                order = created.json()["id"]
                acknowledged[order] = "pending_payment"
                pay = {"order_id": order, "provider": "mock", "payment_method": "pm_card_visa"}
                key = {**auth, "Idempotency-Key": uuid.uuid4().hex}
                if (await call("POST", "/order/pay/", json=pay, headers=key)).status_code == 200:
                    acknowledged[order] = "paid"

        await asyncio.gather(*(customer(t) for t in tokens))
    return seen, acknowledged


def test_a_database_killed_under_load_costs_503s_and_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    key, stocked = "load-signing-key-of-sufficient-length-for-hs256", 100_000
    selection, timeout = 1, 3
    # What an answer during the outage may take: the server selection, the operation timeout
    # (a checkout's transaction retries until it), and a second, which is what a payment or a
    # return that failed may spend giving its Idempotency-Key back (FORGET_TIMEOUT_SECONDS).
    answered_within = selection + timeout + 1
    port = free_port()
    shop = start_shop(
        tmp_path,
        port,
        SHOP_DEMO_DATA="false",
        SHOP_SECRET_KEY=key,
        SHOP_DB_SELECTION_TIMEOUT_SECONDS=str(selection),
        SHOP_DB_TIMEOUT_SECONDS=str(timeout),
    )
    try:
        assert answers(port, 60) is not None, "shop serve did not answer"
        _, database_port = database_pid(tmp_path)
        url = f"mongodb://127.0.0.1:{database_port}/?directConnection=true"
        product, tokens = seed_database(url, key, customers=8, stock=stocked)

        async def scenario() -> tuple[list[tuple[float, int, float]], dict[str, str], float]:
            stop, base = asyncio.Event(), f"http://127.0.0.1:{port}"
            load = asyncio.create_task(shop_under_load(base, str(product), tokens, stop))
            await asyncio.sleep(3)
            killed_at = time.monotonic()
            os.kill(database_pid(tmp_path)[0], signal.SIGKILL)
            # Hold the port for 3 s so the outage outlasts the selection timeout, however
            # fast the supervisor's first restart would have been. The squatter listens: a
            # socket only bound does not keep the restarted server (SO_REUSEADDR) off the port.
            # It never answers, so the shop's connections to it time out.
            with socket.socket() as squatter:
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                assert await asyncio.to_thread(port_closed, database_port, 5)
                squatter.bind(("127.0.0.1", database_port))
                squatter.listen()
                held = time.monotonic()
                # One request of our own while the database is surely down: whether one of
                # the customers' requests falls in the window depends on their timing.
                async with httpx.AsyncClient(base_url=base, timeout=30) as probe:
                    auth = {"Authorization": f"Bearer {tokens[0]}"}
                    started = time.monotonic()
                    during = await probe.get("/cart/", headers=auth)
                    took = time.monotonic() - started
                assert_problem(during, 503, "database_unavailable")
                assert took < answered_within, took
                await asyncio.sleep(max(0.0, 3 - (time.monotonic() - held)))
            recovered = await asyncio.to_thread(answers, port, 30)
            assert recovered is not None, "the service did not recover"
            await asyncio.sleep(2)
            stop.set()
            seen, acknowledged = await load
            return seen, acknowledged, killed_at

        seen, acknowledged, killed_at = asyncio.run(scenario())
        statuses = {status for _, status, _ in seen}
        assert statuses <= {200, 201, 409, 503}, statuses  # never a 500
        outage = [took for _, s, took in seen if s == 503]
        # However a customer's request met the outage, it was answered within the bound.
        assert max(outage, default=0.0) < answered_within
        after = [s for at, s, _ in seen if at > killed_at and s in (200, 201)]
        assert after, "nothing succeeded after the restart"
        assert shop.poll() is None  # the same service throughout

        _, database_port = database_pid(tmp_path)
        url = f"mongodb://127.0.0.1:{database_port}/?directConnection=true"
        with MongoClient(url) as check:
            db = check.shop
            orders = {str(o["_id"]): o for o in db.orders.find()}
            charges = list(db.mock_provider_charges.find({"status": "succeeded"}))
            stock = db.products.find_one({"_id": product})["stock"]
        for order_id, status in acknowledged.items():
            assert order_id in orders, order_id
            if status == "paid":
                assert orders[order_id]["status"] == "paid"
                mine = [c for c in charges if c["key"].startswith(f"order-{order_id}-")]
                assert len(mine) == 1, order_id
        held = sum(
            line["quantity"]
            for o in orders.values()
            if o["status"] != "cancelled"
            for line in o["lines"]
        )
        assert stock + held == stocked  # every unit in stock or held by an order
    finally:
        if shop.poll() is None:
            stop(shop, tmp_path)
