"""Use cases that move several documents together: checkout, payment, and the payment timeout."""

import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from beanie import PydanticObjectId
from bson import Decimal128
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.accounts.models import User
from shop.cart.models import Cart, CartOwner, InsufficientStock
from shop.cart.service import FreshCatalog, quote_cart
from shop.catalog.models import Product
from shop.discounts.models import Discount
from shop.kit import metrics
from shop.kit.clock import utcnow
from shop.kit.config import AppSettings
from shop.kit.db import in_transaction
from shop.kit.pagination import Slice, decode_cursor
from shop.orders.models import (
    CancelReason,
    CartEmpty,
    Order,
    OrderExpired,
    OrderNotFound,
    OrderStatus,
    Payment,
    PaymentAttempt,
    PaymentInProgress,
    PendingOrder,
    ProductUnavailable,
)
from shop.payments.provider import (
    Charge,
    ChargeStatus,
    NextAction,
    PaymentProvider,
    ProviderUnavailable,
)

log = logging.getLogger(__name__)

Providers = Mapping[str, PaymentProvider]


# -- checkout ---------------------------------------------------------------------------------


async def create_order(user_id: PydanticObjectId, settings: AppSettings) -> Order:
    """Turn the cart into an order: all or nothing.

    In one transaction: the cart is emptied, every line's stock is reserved by a guarded
    update (one command for all lines), every discount used is counted against its limits,
    and the order and its payment window are inserted. Any refusal aborts it all. A code
    that no longer applies (used up by a concurrent checkout, say) refuses the checkout with
    its reason (409 ``discount_used_up``, ...) and leaves the cart as it was, code included:
    the customer sees why in the cart and removes the code to order at the full price.
    """
    timeout = timedelta(seconds=settings.payment_timeout_seconds)

    left: list[Cart] = []  # the emptied cart of the attempt that commits

    async def checkout(session: AsyncClientSession) -> Order:
        checked_out = await Cart.check_out(user_id, session)
        cart, emptied = checked_out
        left[:] = [emptied]
        if cart.is_empty:
            raise CartEmpty()
        quote = await quote_cart(cart, settings.currency, FreshCatalog(session), session=session)
        if withdrawn := [str(line.product_id) for line in quote.lines if not line.available]:
            raise ProductUnavailable(products=withdrawn)
        if quote.cart_discount is not None and quote.cart_discount.refusal is not None:
            # Never charge more than the cart promised: the customer removes the code first.
            code = quote.cart_discount.code
            raise quote.cart_discount.refusal.explained(
                f"Code {code} no longer applies; remove it to order without it",
                discount_code=code,
            )
        # The stock read above names the short lines; the guarded updates make sure of it.
        short = [str(line.product_id) for line in quote.lines if not line.in_stock]
        reserved = {line.product_id: line.quantity for line in quote.lines}
        if short or not await Product.reserve(reserved, session):
            raise InsufficientStock(
                "Not enough stock for some products", products=short or list(map(str, reserved))
            )
        await Discount.redeem(quote.discounts_used, user_id, session)
        order = Order.from_quote(user_id, checked_out.order_number, quote, utcnow(), timeout)
        await order.insert(session=session)
        await PendingOrder.open(order, session)
        return order

    # A deleted account orders nothing; read before the transaction, not in it, to keep
    # the transaction (and its window for conflicts on stock) as short as it was.
    await User.must_exist(user_id)
    owner = CartOwner.customer(user_id)
    seen = Cart.last_seen(owner)  # what the cart most likely holds, known at no cost
    order = await Product.in_stock_transaction(
        [line.product_id for line in seen.items] if seen else [], checkout
    )
    left[0].remember(owner)  # the next add is then one update
    _order_changed(order, "created")
    return order


# -- reading, with the payment deadline enforced ----------------------------------------------


class Settled(NamedTuple):
    order: Order
    moved: bool  # whether this call paid or cancelled it


async def read_and_settle(
    order_id: PydanticObjectId, user_id: PydanticObjectId | None, providers: Providers
) -> Order:
    """The user's order (any order for ``user_id=None``, as staff read them) as it stands
    once settled (see ``settle``): reading an order may pay it (a crashed payment's charge
    went through) or cancel it (its deadline passed)."""
    mine = {} if user_id is None else {"user_id": user_id}
    order = await Order.find_one({"_id": order_id, **mine})
    if order is None:
        raise OrderNotFound()
    return (await settle(order, providers, utcnow())).order


async def settle(order: Order, providers: Providers, now: datetime) -> Settled:
    """Bring an unpaid order up to date: finish a crashed payment, enforce the deadline.

    A payment attempt whose hold ran out belongs to a process that stopped, or its charge
    waited for the customer until the deadline: its charge may have gone through, so the
    provider is asked first (a charge still waiting is cancelled there, so that it can never
    succeed later), and a successful charge pays the order. Then, since MongoDB's TTL monitor
    is not prompt, the deadline is checked here, on every read: an order past it is
    cancelled and its stock released, exactly once.
    """
    attempt = order.payment_in_progress
    if attempt is not None and not order.payment_is_running(now):
        charge = await _stop_waiting(providers, attempt.provider, attempt.charge_key(order.id))
        if charge is not None and charge.status is ChargeStatus.succeeded:
            settled = await _settle_success(order, attempt, charge, providers, now)
            return Settled(settled, settled is order)  # or another reader settled it first
    if not order.is_overdue(now):
        return Settled(order, False)

    if (cancelled := await _cancel(order, CancelReason.payment_timeout, now)) is not None:
        return Settled(cancelled, True)
    fresh = await Order.get(order.id)
    assert fresh is not None
    return Settled(fresh, False)


async def _stop_waiting(providers: Providers, name: str, key: str) -> Charge | None:
    """The charge made with ``key``, cancelled at the provider if it still waits. None when
    there is none, or the provider cannot be reached now: a charge that succeeds after its
    order was cancelled is refunded when its news arrives (``record_charge``)."""
    try:
        provider = provider_of(providers, name)
        charge = await provider.retrieve(key)
        if charge is not None and charge.status.waiting:
            charge = await provider.cancel(key)
    except ProviderUnavailable:
        log.warning("could not reach %s about charge %s; settling without it", name, key)
        return None
    return charge


def provider_of(providers: Providers, name: str) -> PaymentProvider:
    """The provider a stored payment or attempt went through. One this service no longer
    has (its key was removed since the payment) is, for that payment, a provider that cannot
    be reached: what needs it waits for it, and nothing else does."""
    if (provider := providers.get(name)) is None:
        raise ProviderUnavailable(f"The payment provider {name!r} is not configured here")
    return provider


async def cancel_order(
    order_id: PydanticObjectId, user_id: PydanticObjectId, providers: Providers
) -> Order:
    """The customer cancels an unpaid order: its stock and discounts are released at once."""
    for _ in range(3):
        order = await read_and_settle(order_id, user_id, providers)
        if (cancelled := await _cancel(order, CancelReason.customer_request, utcnow())) is not None:
            return cancelled
        # It moved since it was read (a payment began, say): read it again, and the
        # transition refuses with the reason if it can no longer be cancelled.
    raise PaymentInProgress()


async def _cancel(order: Order, reason: CancelReason, now: datetime) -> Order | None:
    """Cancel and release what the order holds, in one transaction; exactly once.

    Returns None when the order moved since it was read, and nothing was changed.
    """

    async def cancel(session: AsyncClientSession) -> Order | None:
        cancelled: Order = order.model_copy(deep=True)
        cancelled.cancel(reason, now)
        if not await cancelled.save_if_unchanged(session):
            return None
        await Product.restock(cancelled.reserved_stock, session)
        await Discount.give_back(cancelled.redeemed_discounts, cancelled.user_id, session)
        await PendingOrder.close(order.id, session)
        return cancelled

    cancelled = await Product.in_stock_transaction(order.reserved_stock, cancel)
    if cancelled is not None:
        _order_changed(cancelled, "cancelled", reason=reason.value)
    return cancelled


# -- payment ----------------------------------------------------------------------------------


class PaymentResult(NamedTuple):
    order: Order
    next_action: NextAction | None  # set while the charge waits for the customer


async def pay_order(
    order_id: PydanticObjectId,
    user_id: PydanticObjectId,
    provider_name: str,
    method: str,
    providers: Providers,
    hold: timedelta,
    request_key: str | None = None,
) -> PaymentResult:
    """Charge the order's total once. Of concurrent attempts one holds the order; the rest 409.

    The order is claimed by one conditional update whose filter is the payment rule
    (``Order.payable_query``): pending, inside its deadline, not empty, and held by no other
    attempt. When that misses, the order is read (which settles a crashed attempt or an
    overdue order) to refuse with the reason, or to claim it after a crashed attempt. The
    attempt carries ``request_key`` (the Idempotency-Key): a retry of a request whose process
    died after its charge went through gets the paid order, the outcome it achieved.

    A charge that waits for the customer (3-D Secure) leaves the order unpaid and held by
    the attempt, and the result says what the browser does next; the provider's word
    (``record_charge``, from a webhook or the sweeper) pays or frees the order later.
    """
    provider = providers[provider_name]
    provider.check_method(method)
    await User.must_exist(user_id)
    order = await Order.claim_for_payment(
        order_id, user_id, provider_name, method, utcnow(), hold, request_key
    )
    if order is None:
        order = await read_and_settle(order_id, user_id, providers)
        if order.paid_by(request_key):
            return PaymentResult(order, None)
        order.start_payment(provider_name, method, utcnow(), hold, request_key)
        if not await order.save_if_unchanged():
            await _raise_why_it_moved(order_id, user_id, providers)
            raise PaymentInProgress()
    attempt = order.payment_in_progress
    assert attempt is not None
    if order.total == 0:  # a free order: nothing to charge, so nothing is
        charge = Charge.of_nothing(attempt.charge_key(order.id), order.currency, method, utcnow())
    else:
        charge = await provider.charge(
            key=attempt.charge_key(order.id),
            amount=order.total,
            currency=order.currency,
            method=method,
            reference=str(order.id),
        )
    if charge.status is ChargeStatus.failed:
        _declined(order, charge)
        order.payment_failed(attempt)
        await order.save_if_unchanged()  # if the sweeper moved it meanwhile, its move stands
        charge.raise_if_failed()
    if charge.status.waiting:
        order.await_customer(attempt, charge.payment_id)
        if not await order.save_if_unchanged():
            # The hold ran out meanwhile and another reader moved the order: the charge
            # must not go on waiting for a customer the order no longer waits for.
            cancelled = await provider.cancel(charge.key)
            await record_charge(order.id, cancelled, provider_name, providers)
            await _raise_why_it_moved(order_id, user_id, providers)
            raise PaymentInProgress()
        log.info(
            "payment for order %s waits for the customer",
            order.id,
            extra={"fields": {"order_id": str(order.id), "payment_id": charge.payment_id}},
        )
        return PaymentResult(order, charge.next_action)
    return PaymentResult(await _settle_success(order, attempt, charge, providers, utcnow()), None)


async def record_charge(
    order_id: PydanticObjectId | None,
    charge: Charge | None,
    provider_name: str,
    providers: Providers,
) -> Order | None:
    """What the provider says of a charge (its webhook, or the sweeper's question) moves the
    order, once, whatever the order of the news: a success pays the order its attempt holds,
    a failure frees it for another attempt. A success the order can no longer take (it was
    cancelled, or paid otherwise) is refunded, and the order keeps why. Stale news (a failure
    after the success) changes nothing."""
    if charge is None or order_id is None or (order := await Order.get(order_id)) is None:
        return None
    return await _record_charge_on(order, charge, provider_name, providers)


async def _record_charge_on(
    order: Order, charge: Charge, provider_name: str, providers: Providers
) -> Order:
    attempt = order.payment_in_progress
    if attempt is not None and attempt.charge_key(order.id) == charge.key:
        if charge.status is ChargeStatus.succeeded:
            with contextlib.suppress(OrderExpired):  # refunded, and kept on the order
                return await _settle_success(order, attempt, charge, providers, utcnow())
        elif charge.status is ChargeStatus.failed:
            _declined(order, charge)
            order.payment_failed(attempt)
            await order.save_if_unchanged()
        return order
    paid_with_it = order.payment is not None and order.payment.payment_id == charge.payment_id
    if charge.status is ChargeStatus.succeeded and not paid_with_it:
        await _void(order, charge, providers[provider_name], "order_no_longer_payable")
    return order


def _declined(order: Order, charge: Charge) -> None:
    metrics.PAYMENTS_DECLINED.labels(charge.failure_code or "declined").inc()
    log.info(
        "payment for order %s declined",
        order.id,
        extra={"fields": {"order_id": str(order.id), "code": charge.failure_code}},
    )


async def _raise_why_it_moved(
    order_id: PydanticObjectId, user_id: PydanticObjectId, providers: Providers
) -> None:
    """Another request moved the order since it was read (paid it, say): refuse with that."""
    fresh = await read_and_settle(order_id, user_id, providers)
    fresh.check_payable(utcnow())


async def _settle_success(
    order: Order, attempt: PaymentAttempt, charge: Charge, providers: Providers, now: datetime
) -> Order:
    provider = providers[attempt.provider]
    payment = Payment(
        provider=provider.name,
        payment_id=charge.payment_id,
        amount=charge.amount,
        method=attempt.method,
        paid_at=now,
        request_key=attempt.request_key,
    )
    order.pay(payment, attempt)
    if not await order.save_if_unchanged():
        fresh = await Order.get(order.id)
        assert fresh is not None
        if fresh.payment is not None and fresh.payment.payment_id == charge.payment_id:
            return fresh  # another reader settled this same charge first
        # The order moved while the charge ran (cancelled after the hold ran out, say):
        # the money goes back and the customer is told why.
        await _void(fresh, charge, provider, "payment_too_late")
        raise OrderExpired("The payment came too late and was refunded")
    await PendingOrder.close(order.id)
    _order_changed(order, "paid")
    metrics.money_moved("charged", charge.amount, order.currency)
    return order


async def _void(order: Order, charge: Charge, provider: PaymentProvider, reason: str) -> None:
    """Refund in full a successful charge the order cannot take, and keep it on the order
    with the reason (once, however often the news of the charge arrives)."""
    if charge.amount > 0:
        await provider.refund(
            key=f"{charge.key}-void", payment_id=charge.payment_id, amount=charge.amount
        )
    voided = {
        "payment_id": charge.payment_id,
        "provider": provider.name,
        "amount": Decimal128(charge.amount),
        "reason": reason,
        "at": utcnow(),
    }
    pushed = await Order.get_pymongo_collection().update_one(
        {"_id": order.id, "voided_payments.payment_id": {"$ne": charge.payment_id}},
        {"$push": {"voided_payments": voided}, "$inc": {"version": 1}},
    )
    if pushed.modified_count:
        metrics.money_moved("charged", charge.amount, charge.currency)
        metrics.money_moved("refunded", charge.amount, charge.currency)
        log.warning(
            "order %s could not take a payment; it was refunded (%s)",
            order.id,
            reason,
            extra={
                "fields": {
                    "order_id": str(order.id),
                    "payment_id": charge.payment_id,
                    "reason": reason,
                }
            },
        )


def _order_changed(order: Order, event: str, reason: str = "") -> None:
    """Each state change of an order: one log line and its counter."""
    metrics.order_event(event, reason)
    fields = {
        "event": f"order.{event}",
        "order_id": str(order.id),
        "user_id": str(order.user_id),
        "status": order.status.value,
        "total": str(order.total),
        "currency": order.currency,
    }
    if reason:
        fields["reason"] = reason
    log.info(
        "order %s %s%s", order.id, event, f" ({reason})" if reason else "", extra={"fields": fields}
    )


# -- history ----------------------------------------------------------------------------------


async def number_unnumbered_orders() -> int:
    """Number the orders stored before orders were numbered: each customer's from where
    their count stands, in the order they were placed; returns how many. Each customer's
    orders and count move in a transaction of their own, so a start that stops half-way
    leaves every customer numbered or not, and the next start goes on."""
    orders = Order.get_pymongo_collection()
    unnumbered = orders.find({"number": None}, {"_id": 0, "user_id": 1})  # by the index
    numbered = 0
    for user_id in {raw["user_id"] async for raw in unnumbered}:
        numbered += await in_transaction(partial(_number_orders_of, user_id))
    return numbered


async def _number_orders_of(user_id: PydanticObjectId, session: AsyncClientSession) -> int:
    orders = Order.get_pymongo_collection()
    found = orders.find({"user_id": user_id, "number": None}, {"_id": 1}, session=session)
    unnumbered = [raw["_id"] for raw in await found.sort([("created_at", 1), ("_id", 1)]).to_list()]
    if not unnumbered:
        return 0
    first = await Cart.count_orders(user_id, len(unnumbered), session)
    for number, order_id in enumerate(unnumbered, start=first):
        await orders.update_one(
            {"_id": order_id, "number": None}, {"$set": {"number": number}}, session=session
        )
    return len(unnumbered)


async def _settled(page: Slice[Order], providers: Providers) -> Slice[Order]:
    """The page with each order settled as it is read."""
    now = utcnow()
    return page._replace(items=[(await settle(o, providers, now)).order for o in page.items])


async def order_history(
    user_id: PydanticObjectId,
    providers: Providers,
    *,
    limit: int,
    cursor: str | None,
    status: OrderStatus | None,
) -> Slice[Order]:
    """The user's orders, newest first, a page at a time: ranges of their order numbers. The
    first page reads how many orders they placed from their cart; a cursor names the number
    of the last order shown."""
    below = decode_cursor(cursor, int)[0] if cursor is not None else None
    found = await Order.customer_page(user_id, status, limit, below)
    page = Slice.of(found, limit, lambda last: (last.customer_number,))
    return await _settled(page, providers)


async def find_orders(
    providers: Providers,
    *,
    limit: int,
    cursor: str | None,
    status: OrderStatus | None = None,
    user_id: PydanticObjectId | None = None,
    created_from: datetime | None = None,
    created_before: datetime | None = None,
) -> Slice[Order]:
    """Orders, newest first, a page at a time, settled as they are read. Every combination
    of filters is served by an index (by user, by status, or by date alone)."""
    query: dict[str, Any] = {}
    if user_id is not None:
        query["user_id"] = user_id
    if status is not None:
        query["status"] = status.value
    if created_from is not None or created_before is not None:
        query["created_at"] = {
            **({"$gte": created_from} if created_from else {}),
            **({"$lt": created_before} if created_before else {}),
        }
    found: list[Order] = []
    if cursor is not None:
        # After the cursor: first the orders of its very moment, then the older ones. Two
        # index ranges rather than one `$or`, which the embedded server answers by reading
        # every order there is.
        created_at, order_id = decode_cursor(cursor, datetime, PydanticObjectId)
        if (created_from is None or created_from <= created_at) and (
            created_before is None or created_at < created_before
        ):
            same_moment = {**query, "created_at": created_at, "_id": {"$lt": order_id}}
            found = await Order.find(same_moment).sort("-_id").limit(limit + 1).to_list()
        before = created_at if created_before is None else min(created_at, created_before)
        query["created_at"] = {**query.get("created_at", {}), "$lt": before}
    if len(found) <= limit:
        found += (
            await Order.find(query)
            .sort("-created_at", "-_id")
            .limit(limit + 1 - len(found))
            .to_list()
        )
    page = Slice.of(found, limit, lambda last: (last.created_at, PydanticObjectId(last.id)))
    return await _settled(page, providers)


# -- the sweeper ------------------------------------------------------------------------------


async def sweep_overdue(providers: Providers, batch: int = 100) -> int:
    """Settle overdue orders nobody reads; returns how many this call moved.

    Safe to run in several processes at once: each order moves once.
    """
    now = utcnow()
    due = (
        await Order.find({"status": OrderStatus.pending_payment.value, "expires_at": {"$lte": now}})
        .sort("expires_at")
        .limit(batch)
        .to_list()
    )
    settled = 0
    for order in due:
        settled += (await settle(order, providers, now)).moved
    return settled


class Swept(NamedTuple):
    moved: int  # what this call moved
    last: datetime | None  # where a full batch ended, for the next call; None: no more


def walk_range(until: datetime, after: datetime | None) -> dict[str, datetime]:
    """The range of a sweep's next batch: up to ``until``, and past ``after`` when the batch
    before ended there."""
    return {"$lte": until} if after is None else {"$lte": until, "$gt": after}


async def sweep_unsettled_payments(
    providers: Providers, hold: timedelta, batch: int = 100, after: datetime | None = None
) -> Swept:
    """Ask the provider about attempts older than the payment hold that no webhook settled,
    the oldest first and only those started ``after`` (a previous call's ``last``): a lost
    webhook still ends with the order paid, or payable again. Walking on from where the last
    batch ended, the sweeper reaches every attempt however many of the oldest still wait for
    their customers (3-D Secure), each of which stays due."""
    started = walk_range(utcnow() - hold, after)
    asked = (
        await Order.find(
            {"status": OrderStatus.pending_payment.value, "payment_in_progress.started_at": started}
        )
        .sort("payment_in_progress.started_at")
        .limit(batch)
        .to_list()
    )
    # Where the next call goes on from, read before the orders move: a full batch's last.
    last = asked[-1].payment_in_progress if len(asked) == batch else None
    moved = 0
    for order in asked:
        attempt = order.payment_in_progress
        if attempt is None:
            continue
        try:
            provider = provider_of(providers, attempt.provider)
            charge = await provider.retrieve(attempt.charge_key(order.id))
        except ProviderUnavailable:  # asked again next sweep; the other orders go on
            log.warning("could not reach %s about order %s", attempt.provider, order.id)
            continue
        if charge is None or charge.status.waiting:
            continue  # nothing was charged, or the customer may still finish
        recorded = await _record_charge_on(order, charge, attempt.provider, providers)
        moved += recorded.payment_in_progress is None
    return Swept(moved, last.started_at if last else None)
