"""Returns: claim units on the order, refund through the provider, restock; all or nothing.

The order of events keeps money and goods consistent whatever fails in between:
1. one transaction records the return (``requested``) and sets its units aside on the order;
2. approval (``approved``) is saved before the provider is asked to refund, with the
   return's id as the provider's idempotency key, so a refund only ever exists for an
   approved return and is never issued twice;
3. one transaction then marks the return ``refunded``, counts the refund on the order,
   moves the order's status and puts the units back into stock.
A failure after 2 leaves the return ``approved``: ``complete_refund`` picks it up again (the
sweeper retries such returns, and so does an admin's approve).
"""

import logging
from datetime import datetime, timedelta

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.accounts.models import User
from shop.catalog.models import Product
from shop.kit import metrics
from shop.kit.clock import utcnow
from shop.kit.config import AppSettings
from shop.kit.db import in_transaction
from shop.kit.errors import ConcurrentUpdate
from shop.orders.models import Order, OrderNotFound, Payment
from shop.orders.service import Providers, Swept, provider_of, read_and_settle, walk_range
from shop.payments.provider import ProviderUnavailable, Refund, RefundFailed
from shop.returns.models import (
    RefundRecord,
    ReturnNotFound,
    ReturnRequest,
    ReturnStatus,
)
from shop.returns.schemas import ReturnCreate

log = logging.getLogger(__name__)

# An approved return whose refund has not landed after this long is retried by the sweeper.
REFUND_RETRY_AFTER = timedelta(seconds=30)


async def request_return(
    order_id: PydanticObjectId,
    user_id: PydanticObjectId,
    body: ReturnCreate,
    settings: AppSettings,
    providers: Providers,
) -> ReturnRequest:
    await read_and_settle(order_id, user_id, providers)  # 404 for others' orders
    now = utcnow()
    return_period = timedelta(days=settings.return_window_days)
    quantities = {item.product_id: item.quantity for item in body.items}

    async def claim(session: AsyncClientSession) -> tuple[ReturnRequest, Order]:
        await User.must_exist(user_id, session)
        order = await Order.find_one({"_id": order_id, "user_id": user_id}, session=session)
        if order is None:
            raise OrderNotFound()
        amounts = order.claim_return(quantities, now, return_period)
        if not await order.save_if_unchanged(session):
            raise ConcurrentUpdate()
        request = ReturnRequest.open(order, body.items, amounts, body.note, now)
        await request.insert(session=session)
        return request, order

    request, order = await in_transaction(claim)
    _return_changed(request, "requested")
    if settings.returns_auto_approve:
        return await approve_return(request, providers, order)
    return request


async def approve_return(
    request: ReturnRequest, providers: Providers, order: Order | None = None
) -> ReturnRequest:
    """Approve (if still requested) and refund. Safe to call again on an approved return.
    ``order``: the return's order as read since it was paid, if the caller has it (the
    refund needs only its payment)."""
    request.check_approvable()
    if request.status is ReturnStatus.requested:
        request.approve(utcnow())
        if await request.save_if_unchanged():
            _return_changed(request, "approved")
        else:
            request = await _reload(request.id)
    return await complete_refund(request, providers, order)


async def _refund(request: ReturnRequest, payment: Payment, providers: Providers) -> Refund:
    """The return's refund through the provider that took the payment; nothing to give back
    (free items) goes through no provider."""
    if request.refund_amount == 0:
        return Refund.of_nothing(request.refund_key, payment.payment_id, utcnow())
    return await provider_of(providers, payment.provider).refund(
        key=request.refund_key, payment_id=payment.payment_id, amount=request.refund_amount
    )


async def complete_refund(
    request: ReturnRequest, providers: Providers, order: Order | None = None
) -> ReturnRequest:
    """Refund an approved return, then mark it refunded, its order's units returned and
    their stock back, in one transaction. ``order`` as in ``approve_return``."""
    if request.status is not ReturnStatus.approved:
        return request
    if order is None:
        order = await Order.get(request.order_id)
    assert order is not None and order.payment is not None
    try:
        refund = await _refund(request, order.payment, providers)
    except (RefundFailed, ProviderUnavailable):
        log.warning("refund for return %s failed; it stays approved and is retried", request.id)
        return request
    record = RefundRecord(
        provider=order.payment.provider,
        refund_id=refund.refund_id,
        amount=refund.amount,
        refunded_at=utcnow(),
    )

    settled_here = False

    async def settle(session: AsyncClientSession) -> ReturnRequest:
        nonlocal settled_here
        settled_here = False
        # Saved from the approved return this process holds; read only if saved since.
        current: ReturnRequest = request.model_copy(deep=True)
        current.mark_refunded(record)
        if not await current.save_if_unchanged(session):
            current = await _reload(request.id, session)
            if current.status is not ReturnStatus.approved:
                return current  # settled by a concurrent retry
            current.mark_refunded(record)
            if not await current.save_if_unchanged(session):
                raise ConcurrentUpdate()
        settled_here = True
        paid_order = await Order.get(current.order_id, session=session)
        assert paid_order is not None
        paid_order.record_refund(current.units, record.refunded_at)
        if not await paid_order.save_if_unchanged(session):
            raise ConcurrentUpdate()
        await Product.restock({i.product_id: i.quantity for i in current.items}, session)
        return current

    settled = await Product.in_stock_transaction(
        (item.product_id for item in request.items), settle
    )
    if settled_here:
        metrics.REFUNDS.inc()
        metrics.money_moved("refunded", record.amount, order.currency)
        _return_changed(settled, "refunded")
    return settled


async def reject_return(request: ReturnRequest, reason: str | None) -> ReturnRequest:
    """Reject a requested return: its units become returnable again."""

    async def reject(session: AsyncClientSession) -> ReturnRequest:
        current = await ReturnRequest.get(request.id, session=session)
        assert current is not None
        order = await Order.get(current.order_id, session=session)
        assert order is not None
        current.reject(utcnow(), reason)
        order.release_return(current.units)
        if not (
            await current.save_if_unchanged(session) and await order.save_if_unchanged(session)
        ):
            raise ConcurrentUpdate()
        return current

    rejected = await in_transaction(reject)
    _return_changed(rejected, "rejected")
    return rejected


def _return_changed(request: ReturnRequest, event: str) -> None:
    fields = {
        "event": f"return.{event}",
        "return_id": str(request.id),
        "order_id": str(request.order_id),
        "status": request.status.value,
        "refund_amount": str(request.refund_amount),
    }
    log.info("return %s %s", request.id, event, extra={"fields": fields})


async def retry_refunds(
    providers: Providers, batch: int = 100, after: datetime | None = None
) -> Swept:
    """Finish approved returns whose refund did not land, the longest waiting first and only
    those approved ``after`` (a previous call's ``last``); ``moved`` counts those now
    refunded. Walking on from where the last batch ended, the sweeper reaches every one,
    however many refunds the provider keeps refusing."""
    approved = walk_range(utcnow() - REFUND_RETRY_AFTER, after)
    pending = (
        await ReturnRequest.find({"status": ReturnStatus.approved.value, "updated_at": approved})
        .sort("updated_at")
        .limit(batch)
        .to_list()
    )
    last = pending[-1].updated_at if len(pending) == batch else None
    done = 0
    for request in pending:  # one the provider cannot take now stays approved; the rest go on
        done += (await complete_refund(request, providers)).status is ReturnStatus.refunded
    return Swept(done, last)


async def _reload(
    return_id: PydanticObjectId | None, session: AsyncClientSession | None = None
) -> ReturnRequest:
    found = await ReturnRequest.get(return_id, session=session)
    if found is None:
        raise ReturnNotFound()
    return found


async def returns_of_order(order_id: PydanticObjectId) -> list[ReturnRequest]:
    return await ReturnRequest.find({"order_id": order_id}).sort("created_at").to_list()


async def get_return(return_id: PydanticObjectId) -> ReturnRequest:
    return await _reload(return_id)
