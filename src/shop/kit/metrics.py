"""Prometheus metrics, served at ``GET /metrics``.

With several worker processes ``shop serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any
worker starts, and every worker writes its figures there; ``/metrics``, whichever worker
answers it, adds them up (prometheus-client's multiprocess mode). One worker keeps them in
memory.
"""

import functools
import os
from decimal import Decimal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pymongo import monitoring

from shop.kit.money import CENT

# Decided once, as prometheus-client decides where its values live when first imported.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

HTTP_REQUESTS = Counter(
    "shop_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "shop_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ORDERS = Counter(
    "shop_orders_total", "Orders created, paid and cancelled (with the reason)", ["event", "reason"]
)
PAYMENTS_DECLINED = Counter("shop_payments_declined_total", "Declined charges", ["code"])
REFUNDS = Counter("shop_refunds_total", "Refunds issued for returns")
MONEY = Counter(
    "shop_money_minor_units_total",
    "Amounts charged and refunded, in minor units (cents)",
    ["direction", "currency"],
)
SWEEPS = Counter("shop_sweeper_runs_total", "Runs of the background sweeper")
SWEPT = Counter(
    "shop_sweeper_settled_total",
    "What the sweeper settled: overdue orders, payments, refunds",
    ["kind"],
)
SWEEP_FAILURES = Counter(
    "shop_sweeper_failures_total",
    "Sweeper steps that failed, to be tried at the next sweep",
    ["kind"],
)
DB_DURATION = Histogram(
    "shop_db_command_duration_seconds",
    "Time MongoDB took to answer a command, as the driver saw it",
    ["command", "outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)


# A method outside these is counted as OTHER: a client cannot add series of its choosing.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    count, duration = _request_series(method if method in HTTP_METHODS else "OTHER", route, status)
    count.inc()
    duration.observe(seconds)


# A series is looked up once: `labels()` checks and converts its values and takes a lock on
# every call. Every label is of a bounded set (methods, route templates, status codes,
# command names), and so are these caches.
@functools.cache
def _request_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route)


@functools.cache
def _db_series(command: str, outcome: str) -> Histogram:
    return DB_DURATION.labels(command, outcome)


def order_event(event: str, reason: str = "") -> None:
    ORDERS.labels(event, reason).inc()


def money_moved(direction: str, amount: Decimal, currency: str) -> None:
    MONEY.labels(direction, currency).inc(int(amount / CENT))


class DatabaseTimer(monitoring.CommandListener):
    """Every command's latency, by command name, from the driver's own timing."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        _db_series(event.command_name, "ok").observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        _db_series(event.command_name, "error").observe(event.duration_micros / 1e6)


def render() -> tuple[bytes, str]:
    """The exposition text, summed over every worker process when there are several."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
