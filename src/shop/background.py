"""The sweeper: work nobody's request triggers. Every process may run it; each step is
idempotent and each document moves once."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from shop.kit import metrics
from shop.orders.service import Providers, sweep_overdue, sweep_unsettled_payments
from shop.returns.service import retry_refunds

log = logging.getLogger(__name__)


async def sweep_once(providers: Providers, hold: timedelta) -> None:
    """Each step once. A step that fails is tried again at the next sweep, and the steps
    after it still run: one order or return that always fails holds up no other kind."""
    metrics.SWEEPS.inc()
    steps: list[tuple[str, str, Callable[[], Awaitable[int]]]] = [
        ("overdue_orders", "settled %d overdue orders", lambda: sweep_overdue(providers)),
        (
            "payments",
            "settled %d payments no webhook reported",
            lambda: sweep_unsettled_payments(providers, hold),
        ),
        ("refunds", "completed %d pending refunds", lambda: retry_refunds(providers)),
    ]
    for kind, done, step in steps:
        try:
            moved = await step()
        except Exception:
            metrics.SWEEP_FAILURES.labels(kind).inc()
            log.exception("sweeping %s failed; the next sweep tries again", kind)
            continue
        if moved:
            metrics.SWEPT.labels(kind).inc(moved)
            log.info(done, moved)


async def run_sweeper(providers: Providers, every: float, hold: timedelta) -> None:
    while True:
        await asyncio.sleep(every)
        await sweep_once(providers, hold)
