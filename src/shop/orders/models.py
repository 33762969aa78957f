from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, NamedTuple

from beanie import DecimalAnnotation, Document, Indexed, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.cart.models import Cart
from shop.kit.clock import as_utc, utcnow
from shop.kit.documents import VersionedDocument, update_then_read
from shop.kit.errors import Conflict, NotFound, Unprocessable
from shop.kit.money import ZERO, round_money
from shop.pricing import Quote, allocate


class OrderStatus(StrEnum):
    pending_payment = "pending_payment"
    paid = "paid"
    partially_returned = "partially_returned"
    returned = "returned"
    cancelled = "cancelled"


ALLOWED_TRANSITIONS: dict[OrderStatus, set[OrderStatus]] = {
    OrderStatus.pending_payment: {OrderStatus.paid, OrderStatus.cancelled},
    OrderStatus.paid: {OrderStatus.partially_returned, OrderStatus.returned},
    OrderStatus.partially_returned: {OrderStatus.returned},
    OrderStatus.returned: set(),
    OrderStatus.cancelled: set(),
}


class CancelReason(StrEnum):
    payment_timeout = "payment_timeout"
    customer_request = "customer_request"


class CartEmpty(Conflict):
    code, title = "cart_empty", "The cart is empty"


class ProductUnavailable(Conflict):
    code, title = "product_unavailable", "A product in the cart is no longer sold"


class OrderNotFound(NotFound):
    code, title = "order_not_found", "Order not found"


class IllegalOrderTransition(Conflict):
    code, title = "illegal_order_transition", "The order cannot make this move"


class OrderAlreadyPaid(Conflict):
    code, title = "order_already_paid", "Order already paid"


class OrderExpired(Conflict):
    code, title = "order_expired", "Order cancelled: payment time ran out"


class OrderCancelled(Conflict):
    code, title = "order_cancelled", "Order already cancelled"


class OrderEmpty(Conflict):
    code, title = "order_empty", "Order has nothing to pay"


class PaymentInProgress(Conflict):
    code, title = "payment_in_progress", "A payment for this order is in progress"
    transient = True


class ReturnNotAllowed(Conflict):
    code, title = "return_not_allowed", "Only paid orders can be returned"


class ReturnWindowClosed(Conflict):
    code, title = "return_window_closed", "The return period for this order is over"


class ReturnQuantityExceeded(Conflict):
    code, title = "return_quantity_exceeded", "More units than can still be returned"


class ProductNotInOrder(Unprocessable):
    code, title = "product_not_in_order", "The order has no such product"


class ReturnUnits(NamedTuple):
    """Units of one order line in a return, and what they are refunded."""

    quantity: int
    amount: Decimal


class StatusChange(BaseModel):
    status: OrderStatus
    at: datetime
    reason: str | None = None


class OrderLine(BaseModel):
    """A snapshot of what was bought; later catalog or discount changes never alter it."""

    product_id: PydanticObjectId
    name: str
    unit_price: DecimalAnnotation
    quantity: int
    line_subtotal: DecimalAnnotation
    discount: DecimalAnnotation = ZERO
    discount_id: PydanticObjectId | None = None
    line_total: DecimalAnnotation
    cart_discount_share: DecimalAnnotation = ZERO
    net_total: DecimalAnnotation = Field(description="What the customer paid for this line")
    # Units (and their refund amounts) in open or refunded returns, and of those, refunded.
    claimed_quantity: int = 0
    claimed_amount: DecimalAnnotation = ZERO
    returned_quantity: int = 0
    refunded_amount: DecimalAnnotation = ZERO

    @property
    def returnable_quantity(self) -> int:
        return self.quantity - self.claimed_quantity

    def refund_for(self, quantity: int) -> Decimal:
        """What ``quantity`` more units are worth: their share of what was paid for the line.

        Shares are rounded cumulatively: after ``n`` of ``q`` units the line has refunded
        ``round(net_total * n / q)``, so no refund is negative and none exceeds what is left
        (rounding each batch alone could hand out 5 * 0.02 of a 0.09 line). The return that
        completes the line takes what is left: the line's refunds add up to its net total.
        """
        net, claimed = Decimal(self.net_total), Decimal(self.claimed_amount)
        if self.claimed_quantity + quantity == self.quantity:
            return net - claimed
        due = round_money(net * (self.claimed_quantity + quantity) / self.quantity)
        return max(due - claimed, ZERO)


class AppliedCartDiscount(BaseModel):
    discount_id: PydanticObjectId
    code: str | None
    amount: DecimalAnnotation


class Payment(BaseModel):
    provider: str
    payment_id: str
    amount: DecimalAnnotation
    method: str
    paid_at: datetime
    request_key: str | None = Field(
        default=None, description="The Idempotency-Key of the request that made this payment"
    )


class PaymentAttempt(BaseModel):
    """The payment being made right now; it holds the order until ``until``. A charge that
    waits for the customer (3-D Secure) holds it until the payment deadline."""

    number: int
    provider: str
    method: str
    until: datetime
    request_key: str | None = None  # the Idempotency-Key of the request making it
    started_at: datetime | None = None
    payment_id: str | None = None  # the provider's, once its charge waits for the customer

    def charge_key(self, order_id: PydanticObjectId | None) -> str:
        """The provider's idempotency key: one charge at most per order and attempt."""
        return f"order-{order_id}-attempt-{self.number}"


class VoidedPayment(BaseModel):
    """A charge that succeeded when the order could no longer take it, refunded in full."""

    payment_id: str
    provider: str
    amount: DecimalAnnotation
    reason: str
    at: datetime


class Order(VersionedDocument):
    user_id: PydanticObjectId
    # The customer's orders counted from 1, in the order they were placed (the count is
    # kept on their cart, which checkout writes anyway): a page of their history is then a
    # bounded range of numbers. None only for an order stored before orders were numbered,
    # until the next start numbers it (``orders.service.number_unnumbered_orders``).
    number: int | None = None
    lines: list[OrderLine]
    subtotal: DecimalAnnotation
    cart_discount: AppliedCartDiscount | None = None
    total: DecimalAnnotation
    currency: str
    status: OrderStatus = OrderStatus.pending_payment
    status_history: list[StatusChange] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    paid_at: datetime | None = None
    payment: Payment | None = None
    payment_attempts: int = 0
    payment_in_progress: PaymentAttempt | None = None
    refunded_total: DecimalAnnotation = ZERO
    voided_payments: list[VoidedPayment] = Field(default_factory=list)
    redeemed_discounts: list[PydanticObjectId] = Field(
        default_factory=list, description="Counted against their limits; given back on cancel"
    )

    class Settings:
        name = "orders"
        indexes: ClassVar = [
            # A customer's history: ranges of their order numbers, of one status or any (the
            # embedded server plans by an index only if it holds every field of the filter).
            IndexModel([("user_id", ASCENDING), ("number", DESCENDING)]),
            IndexModel([("user_id", ASCENDING), ("status", ASCENDING), ("number", DESCENDING)]),
            # Orders stored before numbering, which every start looks for: without it, a
            # scan of every order (5.7 to 9.5 s at 100,000 on the embedded server).
            IndexModel([("number", ASCENDING)]),
            # The admins' view of one customer's orders, by date.
            IndexModel([("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel(
                [
                    ("user_id", ASCENDING),
                    ("status", ASCENDING),
                    ("created_at", DESCENDING),
                    ("_id", DESCENDING),
                ]
            ),
            IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)]),
            # The sweeper's question to the provider about attempts no webhook settled.
            IndexModel([("status", ASCENDING), ("payment_in_progress.started_at", ASCENDING)]),
            # The admins' views: every order, or those of one status, newest first.
            IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)]),
            IndexModel([("status", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
        ]

    @classmethod
    def from_quote(
        cls,
        user_id: PydanticObjectId,
        number: int,
        quote: Quote,
        now: datetime,
        timeout: timedelta,
    ) -> "Order":
        """The customer's order ``number``, unpaid: a snapshot of the priced cart, payable
        until ``now + timeout``. The cart discount is split across the lines here, once."""
        cart_discount = (
            quote.cart_discount if quote.cart_discount and quote.cart_discount.applied else None
        )
        shares = allocate(
            cart_discount.amount if cart_discount else ZERO,
            [line.line_total for line in quote.lines],
        )
        lines = [
            OrderLine(
                product_id=line.product_id,
                name=line.name,
                unit_price=line.unit_price,
                quantity=line.quantity,
                line_subtotal=line.line_subtotal,
                discount=line.discount,
                discount_id=line.discount_id,
                line_total=line.line_total,
                cart_discount_share=share,
                net_total=line.line_total - share,
            )
            for line, share in zip(quote.lines, shares, strict=True)
        ]
        return cls(
            user_id=user_id,
            number=number,
            lines=lines,
            subtotal=quote.subtotal,
            cart_discount=AppliedCartDiscount(
                discount_id=cart_discount.discount_id,
                code=cart_discount.code,
                amount=cart_discount.amount,
            )
            if cart_discount and cart_discount.discount_id
            else None,
            total=quote.total,
            currency=quote.currency,
            created_at=now,
            expires_at=now + timeout,
            status_history=[StatusChange(status=OrderStatus.pending_payment, at=now)],
            redeemed_discounts=[d.id for d in quote.discounts_used if d.id is not None],
        )

    # -- reading ---------------------------------------------------------------------------

    @classmethod
    async def customer_page(
        cls,
        user_id: PydanticObjectId,
        status: "OrderStatus | None",
        limit: int,
        below: int | None,
    ) -> list["Order"]:
        """The customer's orders numbered below ``below`` (None: from the newest), newest
        first: up to ``limit + 1`` (one more, to know whether more follow), as bounded ranges
        of numbers. How many orders the customer placed is read from their cart for a first
        page, and otherwise only when a range comes back short, so that a crafted ``below``
        ranges over no more than there is.

        "Their orders, sorted, first ``limit``" makes the embedded server read every order
        of the customer before it sorts (2 s for a first page of 10,000); a bounded range
        reads only what it returns, on mongod too. Numbers have no gaps, so without a status
        one range fills the page; with one, a range left short is followed by one twice as
        wide, down to order 1.
        """
        placed = None
        if below is None:
            placed = await Cart.orders_placed_by(user_id)
            below = placed + 1
        found: list[Order] = []
        width = limit + 1
        while below > 1 and len(found) <= limit:
            query: dict[str, Any] = {
                "user_id": user_id,
                "number": {"$gte": max(1, below - width), "$lt": below},
            }
            if status is not None:
                query["status"] = status.value
            found += await cls.find(query).sort("-number").limit(limit + 1 - len(found)).to_list()
            below, width = below - width, width * 2
            if len(found) <= limit and placed is None:
                placed = await Cart.orders_placed_by(user_id)
                below = min(below, placed + 1)
        return found

    @property
    def customer_number(self) -> int:
        assert self.number is not None, "orders are numbered when placed, or at start-up"
        return self.number

    def is_overdue(self, now: datetime) -> bool:
        """Unpaid past its deadline, with no payment attempt still holding it."""
        return (
            self.status is OrderStatus.pending_payment
            and as_utc(self.expires_at) <= now
            and not self.payment_is_running(now)
        )

    def payment_is_running(self, now: datetime) -> bool:
        attempt = self.payment_in_progress
        return attempt is not None and as_utc(attempt.until) > now

    @property
    def cancelled_by_customer(self) -> bool:
        last = self.status_history[-1] if self.status_history else None
        return (
            self.status is OrderStatus.cancelled
            and last is not None
            and last.reason == CancelReason.customer_request.value
        )

    @property
    def reserved_stock(self) -> dict[PydanticObjectId, int]:
        reserved: dict[PydanticObjectId, int] = {}
        for line in self.lines:
            reserved[line.product_id] = reserved.get(line.product_id, 0) + line.quantity
        return reserved

    # -- transitions: each checks the state, changes self, and does no I/O ----------------

    def _move(self, status: OrderStatus, now: datetime, reason: str | None = None) -> None:
        if status not in ALLOWED_TRANSITIONS[self.status]:
            raise IllegalOrderTransition(f"An order that is {self.status} cannot become {status}")
        self.status = status
        self.status_history.append(StatusChange(status=status, at=now, reason=reason))

    def check_payable(self, now: datetime) -> None:
        if self.status in (OrderStatus.paid, OrderStatus.partially_returned, OrderStatus.returned):
            raise OrderAlreadyPaid()
        if self.status is OrderStatus.cancelled and self.cancelled_by_customer:
            raise OrderCancelled("The customer cancelled this order; it can no longer be paid")
        if self.status is OrderStatus.cancelled or as_utc(self.expires_at) <= now:
            raise OrderExpired()
        if not self.lines:
            raise OrderEmpty()
        if self.payment_is_running(now):
            raise PaymentInProgress()

    def start_payment(
        self,
        provider: str,
        method: str,
        now: datetime,
        hold: timedelta,
        request_key: str | None = None,
    ) -> PaymentAttempt:
        self.check_payable(now)
        self.payment_attempts += 1
        self.payment_in_progress = PaymentAttempt(
            number=self.payment_attempts,
            provider=provider,
            method=method,
            until=now + hold,
            request_key=request_key,
            started_at=now,
        )
        return self.payment_in_progress

    def paid_by(self, request_key: str | None) -> bool:
        """Whether the request with this Idempotency-Key made the order's payment (its retry
        after a crash gets the success it achieved)."""
        return (
            request_key is not None
            and self.payment is not None
            and self.payment.request_key == request_key
        )

    @staticmethod
    def payable_query(now: datetime) -> dict[str, Any]:
        """``check_payable``'s rule as a query, for an order no payment attempt holds.

        An order with an attempt, even a crashed one, does not match: a crashed attempt's
        charge may have gone through, so it is reconciled first (``settle_overdue``).
        """
        return {
            "status": OrderStatus.pending_payment.value,
            "expires_at": {"$gt": now},
            "lines.0": {"$exists": True},
            "payment_in_progress": None,
        }

    @classmethod
    async def claim_for_payment(
        cls,
        order_id: PydanticObjectId,
        user_id: PydanticObjectId,
        provider: str,
        method: str,
        now: datetime,
        hold: timedelta,
        request_key: str | None = None,
    ) -> "Order | None":
        """``start_payment`` in one conditional update; None when the order is not payable
        as it stands (the caller reads it to say why)."""
        raw = await update_then_read(
            cls.get_pymongo_collection(),
            {"_id": order_id, "user_id": user_id},
            [
                {
                    "$set": {
                        "payment_attempts": {"$add": ["$payment_attempts", 1]},
                        "version": {"$add": ["$version", 1]},
                    }
                },
                {
                    "$set": {
                        "payment_in_progress": {
                            "number": "$payment_attempts",
                            "provider": {"$literal": provider},
                            "method": {"$literal": method},
                            "until": now + hold,
                            "request_key": {"$literal": request_key},
                            "started_at": now,
                        }
                    }
                },
            ],
            precondition=cls.payable_query(now),
        )
        # Read after the claim: only this attempt moves the order until its hold runs out.
        return None if raw is None else cls.model_validate(raw)

    def await_customer(self, attempt: PaymentAttempt, payment_id: str) -> None:
        """The attempt's charge waits for the customer: it holds the order until the
        deadline, when an unfinished charge is cancelled with the order."""
        if self.payment_in_progress != attempt:
            raise IllegalOrderTransition("That payment attempt no longer holds the order")
        until = max(as_utc(attempt.until), as_utc(self.expires_at))
        self.payment_in_progress = attempt.model_copy(
            update={"payment_id": payment_id, "until": until}
        )

    def payment_failed(self, attempt: PaymentAttempt) -> None:
        if self.payment_in_progress != attempt:
            raise IllegalOrderTransition("That payment attempt no longer holds the order")
        self.payment_in_progress = None

    def pay(self, payment: Payment, attempt: PaymentAttempt) -> None:
        """Mark paid. The attempt began inside the payment window, so a late finish still counts."""
        if self.payment_in_progress != attempt:
            raise IllegalOrderTransition("That payment attempt no longer holds the order")
        self._move(OrderStatus.paid, payment.paid_at)
        self.payment_in_progress = None
        self.paid_at = payment.paid_at
        self.payment = payment

    def line_for(self, product_id: PydanticObjectId) -> OrderLine:
        for line in self.lines:
            if line.product_id == product_id:
                return line
        raise ProductNotInOrder(f"Product {product_id} is not in this order")

    def claim_return(
        self, quantities: dict[PydanticObjectId, int], now: datetime, window: timedelta
    ) -> dict[PydanticObjectId, Decimal]:
        """Set units aside for a return; returns each product's refund amount."""
        if self.status not in (OrderStatus.paid, OrderStatus.partially_returned):
            raise ReturnNotAllowed(f"An order that is {self.status} cannot be returned")
        assert self.paid_at is not None
        if now > as_utc(self.paid_at) + window:
            raise ReturnWindowClosed()
        lines = {product_id: self.line_for(product_id) for product_id in quantities}
        if over := [p for p, q in quantities.items() if q > lines[p].returnable_quantity]:
            told = "; ".join(
                f"product {p}: {quantities[p]} asked, {lines[p].returnable_quantity} left to return"
                for p in over
            )
            raise ReturnQuantityExceeded(
                f"More units than can still be returned: {told}",
                products=[str(p) for p in over],
                returnable={str(p): lines[p].returnable_quantity for p in over},
            )
        amounts = {}
        for product_id, quantity in quantities.items():
            line = lines[product_id]
            amounts[product_id] = line.refund_for(quantity)
            line.claimed_quantity += quantity
            line.claimed_amount = Decimal(line.claimed_amount) + amounts[product_id]
        return amounts

    def release_return(self, amounts: dict[PydanticObjectId, ReturnUnits]) -> None:
        """A rejected return gives its units back to what can be returned."""
        for product_id, (quantity, amount) in amounts.items():
            line = self.line_for(product_id)
            line.claimed_quantity -= quantity
            line.claimed_amount = Decimal(line.claimed_amount) - amount

    def record_refund(self, amounts: dict[PydanticObjectId, ReturnUnits], now: datetime) -> None:
        """Claimed units were refunded: the order is returned once every unit is."""
        for product_id, (quantity, amount) in amounts.items():
            line = self.line_for(product_id)
            line.returned_quantity += quantity
            line.refunded_amount = Decimal(line.refunded_amount) + amount
            self.refunded_total = Decimal(self.refunded_total) + amount
        everything = all(line.returned_quantity == line.quantity for line in self.lines)
        status = OrderStatus.returned if everything else OrderStatus.partially_returned
        if status is not self.status:
            self._move(status, now)

    def cancel(self, reason: CancelReason, now: datetime) -> None:
        """Only an unpaid order can be cancelled, and not while a payment attempt holds it."""
        if self.status is OrderStatus.cancelled:
            raise OrderCancelled()
        if self.status is not OrderStatus.pending_payment:
            raise OrderAlreadyPaid("A paid order is returned, not cancelled")
        if self.payment_is_running(now):
            raise PaymentInProgress()
        self._move(OrderStatus.cancelled, now, reason.value)
        self.payment_in_progress = None


class PendingOrder(Document):
    """One per unpaid order: its payment window, removed when the order is paid or
    cancelled, and by MongoDB's TTL monitor after ``expires_at``. The deadline itself is the
    order's ``expires_at``, which readers and the payment claim check (the monitor runs only
    once a minute)."""

    id: PydanticObjectId  # the order's id
    user_id: PydanticObjectId
    expires_at: Annotated[datetime, Indexed(expireAfterSeconds=0)]

    class Settings:
        name = "pending_orders"

    @classmethod
    async def open(cls, order: Order, session: AsyncClientSession) -> None:
        assert order.id is not None
        pending = cls(id=order.id, user_id=order.user_id, expires_at=order.expires_at)
        await pending.insert(session=session)

    @classmethod
    async def close(
        cls, order_id: PydanticObjectId | None, session: AsyncClientSession | None = None
    ) -> None:
        """The order was paid or cancelled (closing a closed one does nothing)."""
        await cls.get_pymongo_collection().delete_one({"_id": order_id}, session=session)
