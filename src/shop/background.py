"""The sweeper: work nobody's request triggers. Every process may run it; each step is
idempotent and each document moves once."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from shop.kit import metrics
from shop.orders.service import Providers, sweep_overdue, sweep_unsettled_payments
from shop.returns.service import retry_refunds

log = logging.getLogger(__name__)


class Sweeper:
    """The steps of one sweep, and where the walks through unsettled payments and pending
    refunds go on from at the next (each sweep takes one batch of each to the provider)."""

    def __init__(self, providers: Providers, hold: timedelta, batch: int = 100) -> None:
        self.providers = providers
        self.hold = hold
        self.batch = batch
        self._payments_after: datetime | None = None
        self._refunds_after: datetime | None = None

    async def sweep_once(self) -> None:
        """Each step once. A step that fails is tried again at the next sweep, and the
        steps after it still run: one order or return that always fails holds up no other
        kind."""
        metrics.SWEEPS.inc()
        steps: list[tuple[str, str, Callable[[], Awaitable[int]]]] = [
            ("overdue_orders", "settled %d overdue orders", self._overdue),
            ("payments", "settled %d payments no webhook reported", self._payments),
            ("refunds", "completed %d pending refunds", self._refunds),
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

    async def _overdue(self) -> int:
        return await sweep_overdue(self.providers)

    async def _payments(self) -> int:
        swept = await sweep_unsettled_payments(
            self.providers, self.hold, self.batch, self._payments_after
        )
        self._payments_after = swept.last
        return swept.moved

    async def _refunds(self) -> int:
        swept = await retry_refunds(self.providers, self.batch, self._refunds_after)
        self._refunds_after = swept.last
        return swept.moved


async def run_sweeper(providers: Providers, every: float, hold: timedelta) -> None:
    sweeper = Sweeper(providers, hold)
    while True:
        await asyncio.sleep(every)
        await sweeper.sweep_once()
