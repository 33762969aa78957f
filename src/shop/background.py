"""The sweeper: work nobody's request triggers. Every process may run it; each step is
idempotent and each document moves once."""

import asyncio
import logging

from shop import metrics
from shop.orders.service import Providers, sweep_overdue
from shop.returns.service import retry_refunds

log = logging.getLogger(__name__)


async def sweep_once(providers: Providers) -> None:
    metrics.SWEEPS.inc()
    if cancelled := await sweep_overdue(providers):
        metrics.SWEPT.labels("overdue_orders").inc(cancelled)
        log.info("settled %d overdue orders", cancelled)
    if refunded := await retry_refunds(providers):
        metrics.SWEPT.labels("refunds").inc(refunded)
        log.info("completed %d pending refunds", refunded)


async def run_sweeper(providers: Providers, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await sweep_once(providers)
        except Exception:
            log.exception("sweep failed; trying again in %s s", every)
