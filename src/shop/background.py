"""The sweeper: work nobody's request triggers. Every process may run it; each step is
idempotent and each document moves once."""

import asyncio
import logging
from datetime import timedelta

from shop.kit import metrics
from shop.orders.service import Providers, sweep_overdue, sweep_unsettled_payments
from shop.returns.service import retry_refunds

log = logging.getLogger(__name__)


async def sweep_once(providers: Providers, hold: timedelta) -> None:
    metrics.SWEEPS.inc()
    if cancelled := await sweep_overdue(providers):
        metrics.SWEPT.labels("overdue_orders").inc(cancelled)
        log.info("settled %d overdue orders", cancelled)
    if settled := await sweep_unsettled_payments(providers, hold):
        metrics.SWEPT.labels("payments").inc(settled)
        log.info("settled %d payments no webhook reported", settled)
    if refunded := await retry_refunds(providers):
        metrics.SWEPT.labels("refunds").inc(refunded)
        log.info("completed %d pending refunds", refunded)


async def run_sweeper(providers: Providers, every: float, hold: timedelta) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await sweep_once(providers, hold)
        except Exception:
            log.exception("sweep failed; trying again in %s s", every)
