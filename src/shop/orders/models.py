from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, ClassVar

from beanie import DecimalAnnotation, Document, Indexed, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

from shop.clock import as_utc, utcnow
from shop.documents import VersionedDocument
from shop.errors import Conflict, NotFound
from shop.money import ZERO


class OrderStatus(StrEnum):
    pending_payment = "pending_payment"
    paid = "paid"
    partially_returned = "partially_returned"
    returned = "returned"
    cancelled = "cancelled"


ALLOWED_TRANSITIONS: dict[OrderStatus, set[OrderStatus]] = {
    OrderStatus.pending_payment: {OrderStatus.paid, OrderStatus.cancelled},
    OrderStatus.paid: {OrderStatus.partially_returned, OrderStatus.returned},
    OrderStatus.partially_returned: {OrderStatus.partially_returned, OrderStatus.returned},
    OrderStatus.returned: set(),
    OrderStatus.cancelled: set(),
}


class CancelReason(StrEnum):
    payment_timeout = "payment_timeout"


class OrderNotFound(NotFound):
    code, title = "order_not_found", "Order not found"


class IllegalOrderTransition(Conflict):
    code, title = "illegal_order_transition", "The order cannot make this move"


class OrderAlreadyPaid(Conflict):
    code, title = "order_already_paid", "Order already paid"


class OrderExpired(Conflict):
    code, title = "order_expired", "Order cancelled: payment time ran out"


class OrderEmpty(Conflict):
    code, title = "order_empty", "Order has nothing to pay"


class PaymentInProgress(Conflict):
    code, title = "payment_in_progress", "A payment for this order is in progress"


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
    returned_quantity: int = 0
    refunded_amount: DecimalAnnotation = ZERO


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


class PaymentAttempt(BaseModel):
    """The payment being made right now; it holds the order until ``until``."""

    number: int
    provider: str
    method: str
    until: datetime

    def charge_key(self, order_id: PydanticObjectId | None) -> str:
        """The provider's idempotency key: one charge at most per order and attempt."""
        return f"order-{order_id}-attempt-{self.number}"


class Order(VersionedDocument):
    user_id: PydanticObjectId
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
    redeemed_discounts: list[PydanticObjectId] = Field(
        default_factory=list, description="Counted against their limits; given back on cancel"
    )

    class Settings:
        name = "orders"
        indexes: ClassVar = [
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
        ]

    # -- reading ---------------------------------------------------------------------------

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
        if self.status is OrderStatus.cancelled or as_utc(self.expires_at) <= now:
            raise OrderExpired()
        if not self.lines or self.total <= ZERO:
            raise OrderEmpty()
        if self.payment_is_running(now):
            raise PaymentInProgress()

    def start_payment(
        self, provider: str, method: str, now: datetime, hold: timedelta
    ) -> PaymentAttempt:
        self.check_payable(now)
        self.payment_attempts += 1
        self.payment_in_progress = PaymentAttempt(
            number=self.payment_attempts, provider=provider, method=method, until=now + hold
        )
        return self.payment_in_progress

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

    def cancel(self, reason: CancelReason, now: datetime) -> None:
        if self.status is OrderStatus.pending_payment and self.payment_is_running(now):
            raise PaymentInProgress()
        self._move(OrderStatus.cancelled, now, reason.value)
        self.payment_in_progress = None


class PendingOrder(Document):
    """One per unpaid order: its payment window. MongoDB's TTL monitor removes it after
    ``expires_at``, but that monitor runs once a minute, so readers check the time as well."""

    id: PydanticObjectId  # the order's id
    user_id: PydanticObjectId
    expires_at: Annotated[datetime, Indexed(expireAfterSeconds=0)]

    class Settings:
        name = "pending_orders"

    def is_open(self, now: datetime) -> bool:
        return as_utc(self.expires_at) > now
