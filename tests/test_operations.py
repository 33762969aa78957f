"""What operators get: health and readiness probes, request ids, one JSON log line per
request and per state change (never a secret in any), and Prometheus metrics."""

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pymongo import AsyncMongoClient

from shop.kit.embedded import free_port
from shop.kit.observability import JsonFormatter
from tests.factories import (
    PASSWORD,
    Account,
    assert_problem,
    make_paid_order,
    make_product,
    request_return,
)
from tests.processes import answers, start_shop, stop, workers_of


async def test_health_and_ready_need_no_token(client: AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"status": "ready"}


async def test_ready_is_503_when_the_database_does_not_answer(
    client: AsyncClient, app: FastAPI
) -> None:
    working = app.state.mongo
    app.state.mongo = AsyncMongoClient(
        "mongodb://127.0.0.1:9/?directConnection=true", serverSelectionTimeoutMS=200
    )
    try:
        assert_problem(await client.get("/ready"), 503, "database_unavailable")
        assert (await client.get("/health")).status_code == 200
    finally:
        await app.state.mongo.close()
        app.state.mongo = working


async def test_every_answer_carries_a_request_id(client: AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "lb-1234.abc"})
    assert given.headers["x-request-id"] == "lb-1234.abc"
    made = await client.get("/health", headers={"X-Request-ID": "not sane; <script>" * 10})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    missing = await client.get("/products/64b7f0c2a1b2c3d4e5f60718")
    assert missing.json()["request_id"] == missing.headers["x-request-id"]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything logged while the test runs, as the service writes it in JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_a_journey_logs_one_line_per_request_and_change_and_no_secret(
    client: AsyncClient, customer: Account, log_lines: io.StringIO
) -> None:
    registered = await client.post(
        "/auth/register", json={"email": "ann@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201
    login = await client.post(
        "/auth/token", data={"username": "ann@example.com", "password": PASSWORD}
    )
    tokens = login.json()
    product = await make_product(price="9.99")
    order = await make_paid_order(client, customer, (product, 2))
    returned = await request_return(client, customer, order["id"], (product, 1), key="rk-1")
    assert returned.status_code == 201

    entries = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    requests = [e for e in entries if e["logger"] == "shop.http"]
    assert [(e["method"], e["route"], e["status"]) for e in requests] == [
        ("POST", "/auth/register", 201),
        ("POST", "/auth/token", 200),
        ("POST", "/cart/add/", 200),
        ("POST", "/order/create/", 201),
        ("POST", "/order/pay/", 200),
        ("POST", "/order/{order_id}/return/", 201),
    ]
    for entry in requests:
        assert entry["level"] == "info" and re.fullmatch(r"[0-9a-f]{32}", entry["request_id"])
        assert entry["duration_ms"] >= 0
    assert {e["user_id"] for e in requests[2:]} == {str(customer.id)}
    changes = [e["event"] for e in entries if "event" in e]
    assert changes == ["order.created", "order.paid", "return.requested", "return.approved",
                       "return.refunded"]  # fmt: skip
    assert all(e["order_id"] == order["id"] for e in entries if "event" in e)

    text = log_lines.getvalue()
    for secret in (PASSWORD, tokens["access_token"], tokens["refresh_token"], customer.token):
        assert secret not in text
    assert "rk-1" not in text  # nor an idempotency key


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name or series.startswith(f"{name}{{"):
            inside = series[len(name) + 1 : -1]
            if ",".join(sorted(inside.split(","))) == wanted:
                return float(value)
    return 0.0


async def test_metrics_count_requests_orders_and_money(
    client: AsyncClient, customer: Account
) -> None:
    before = (await client.get("/metrics")).text
    product = await make_product(price="12.50")
    order = await make_paid_order(client, customer, (product, 2))
    await request_return(client, customer, order["id"], (product, 1))
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("shop_orders_total", event="created", reason="") == 1
    assert grew("shop_orders_total", event="paid", reason="") == 1
    assert grew("shop_money_minor_units_total", direction="charged", currency="EUR") == 2500
    assert grew("shop_money_minor_units_total", direction="refunded", currency="EUR") == 1250
    assert grew("shop_refunds_total") == 1
    route = {"method": "POST", "route": "/order/pay/", "status": "200"}
    assert grew("shop_http_requests_total", **route) == 1
    assert grew("shop_db_command_duration_seconds_count", command="find", outcome="ok") > 0


async def test_a_client_cannot_add_metric_series_with_methods_of_its_own(
    client: AsyncClient,
) -> None:
    for n in range(5):
        response = await client.request(f"PROBE{n}", "/cart/")
        assert response.status_code == 405
    text = (await client.get("/metrics")).text
    assert "PROBE" not in text
    other = {"method": "OTHER", "route": "/cart/", "status": "405"}
    assert sample(text, "shop_http_requests_total", **other) >= 5


@pytest.mark.slow
def test_metrics_add_up_every_workers_figures(tmp_path: Path) -> None:
    """With two workers, whichever answers /metrics counts the requests both served."""
    port = free_port()
    shop = start_shop(tmp_path, port, workers=2)
    try:
        assert answers(port, 60), "shop serve did not answer"
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            served = {http.get("/products/").headers["x-request-id"] for _ in range(40)}
            assert len(served) == 40
            expositions = [http.get("/metrics").text for _ in range(6)]
        assert len(workers_of(shop)) == 2
        counted = [
            sample(text, "shop_http_requests_total", method="GET", route="/products/", status="200")
            for text in expositions
        ]
        # answers() polled /products/ at least once before the 40.
        assert len(set(counted)) == 1 and counted[0] >= 41, counted
    finally:
        log = stop(shop, tmp_path)
    assert shop.returncode == 0, log
    # Both workers log each request, in the configured format, with its id.
    logged = {line.rsplit("[", 1)[1].rstrip("]") for line in log.splitlines()
              if " shop.http: GET /products/ 200 " in line}  # fmt: skip
    assert served <= logged


def test_shop_serve_sets_up_metrics_before_anything_imports_prometheus() -> None:
    """prometheus-client picks its multiprocess mode when first imported: the CLI module
    must not import it before ``shop serve`` has set PROMETHEUS_MULTIPROC_DIR."""
    probe = "import sys, shop.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
