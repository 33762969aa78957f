from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Protocol

from beanie import DecimalAnnotation, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel

from shop.kit.clock import utcnow
from shop.kit.documents import VersionedDocument
from shop.kit.errors import Conflict, NotFound
from shop.kit.money import ZERO
from shop.orders.models import Order, ReturnUnits


class ReturnStatus(StrEnum):
    requested = "requested"
    approved = "approved"  # refund under way; retried until the provider has refunded
    refunded = "refunded"
    rejected = "rejected"


class ReturnReason(StrEnum):
    damaged = "damaged"
    defective = "defective"
    wrong_item = "wrong_item"
    not_as_described = "not_as_described"
    no_longer_needed = "no_longer_needed"
    other = "other"


class ReturnNotFound(NotFound):
    code, title = "return_not_found", "Return not found"


class IllegalReturnTransition(Conflict):
    code, title = "illegal_return_transition", "The return cannot make this move"


class ItemToReturn(Protocol):
    product_id: PydanticObjectId
    quantity: int
    reason: ReturnReason


class ReturnItem(BaseModel):
    product_id: PydanticObjectId
    quantity: int
    reason: ReturnReason
    refund_amount: DecimalAnnotation


class RefundRecord(BaseModel):
    provider: str
    refund_id: str
    amount: DecimalAnnotation
    refunded_at: datetime


class ReturnStatusChange(BaseModel):
    status: ReturnStatus
    at: datetime
    reason: str | None = None


class ReturnRequest(VersionedDocument):
    order_id: PydanticObjectId
    user_id: PydanticObjectId
    items: list[ReturnItem]
    note: str | None = None
    status: ReturnStatus = ReturnStatus.requested
    status_history: list[ReturnStatusChange] = Field(default_factory=list)
    refund_amount: DecimalAnnotation
    refund: RefundRecord | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "returns"
        indexes: ClassVar = [
            IndexModel([("order_id", ASCENDING), ("created_at", ASCENDING)]),
            IndexModel([("status", ASCENDING), ("updated_at", ASCENDING)]),
        ]

    @property
    def refund_key(self) -> str:
        """The provider's idempotency key: one refund at most per return."""
        return f"return-{self.id}"

    @classmethod
    def open(
        cls,
        order: Order,
        items: Iterable[ItemToReturn],
        amounts: Mapping[PydanticObjectId, Decimal],
        note: str | None,
        now: datetime,
    ) -> "ReturnRequest":
        """A new return of ``order``'s units, each refunded its amount from ``amounts``."""
        assert order.id is not None
        returned = [
            ReturnItem(
                product_id=item.product_id,
                quantity=item.quantity,
                reason=item.reason,
                refund_amount=amounts[item.product_id],
            )
            for item in items
        ]
        return cls(
            order_id=order.id,
            user_id=order.user_id,
            items=returned,
            note=note,
            refund_amount=sum(amounts.values(), ZERO),
            created_at=now,
            updated_at=now,
            status_history=[ReturnStatusChange(status=ReturnStatus.requested, at=now)],
        )

    @property
    def units(self) -> dict[PydanticObjectId, ReturnUnits]:
        return {i.product_id: ReturnUnits(i.quantity, Decimal(i.refund_amount)) for i in self.items}

    def _move(self, status: ReturnStatus, now: datetime, reason: str | None = None) -> None:
        allowed = {
            ReturnStatus.requested: {ReturnStatus.approved, ReturnStatus.rejected},
            ReturnStatus.approved: {ReturnStatus.refunded},
        }
        if status not in allowed.get(self.status, set()):
            raise IllegalReturnTransition(f"A return that is {self.status} cannot become {status}")
        self.status = status
        self.updated_at = now
        self.status_history.append(ReturnStatusChange(status=status, at=now, reason=reason))

    def check_approvable(self) -> None:
        """Approving a requested return moves it on; approving an approved one retries its
        refund. Anything else is settled already."""
        if self.status not in (ReturnStatus.requested, ReturnStatus.approved):
            raise IllegalReturnTransition(f"The return is already {self.status}")

    def approve(self, now: datetime) -> None:
        self._move(ReturnStatus.approved, now)

    def reject(self, now: datetime, reason: str | None) -> None:
        self._move(ReturnStatus.rejected, now, reason)

    def mark_refunded(self, refund: RefundRecord) -> None:
        if refund.amount != self.refund_amount:
            raise IllegalReturnTransition("The refund does not match the return")
        self._move(ReturnStatus.refunded, refund.refunded_at)
        self.refund = refund
