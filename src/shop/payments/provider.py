"""The one small interface every payment provider implements, and what it answers.

A provider is idempotent: a repeated ``charge`` or ``refund`` with the same key returns the
first result. ``payments/mock.py`` is the simulated one.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from shop.errors import Conflict, ShopError, Unprocessable


class ChargeStatus(StrEnum):
    succeeded = "succeeded"
    failed = "failed"


class PaymentDeclined(ShopError):
    status, code, title = 402, "payment_declined", "Payment declined"


class InsufficientFunds(PaymentDeclined):
    code, title = "insufficient_funds", "Payment declined: insufficient funds"


class UnknownPaymentMethod(Unprocessable):
    code, title = "unknown_payment_method", "Unknown payment method"


class RefundFailed(ShopError):
    status, code, title = 502, "refund_failed", "The payment provider could not refund"


class RefundExceedsCharge(Conflict):
    code, title = "refund_exceeds_charge", "Refund larger than what is left of the charge"


DECLINE_ERRORS: dict[str, type[PaymentDeclined]] = {
    "card_declined": PaymentDeclined,
    "insufficient_funds": InsufficientFunds,
}


@dataclass(frozen=True)
class Charge:
    payment_id: str
    key: str
    amount: Decimal
    currency: str
    method: str
    status: ChargeStatus
    failure_code: str | None
    created_at: datetime

    def raise_if_failed(self) -> None:
        if self.status is ChargeStatus.failed:
            raise DECLINE_ERRORS.get(self.failure_code or "", PaymentDeclined)()


@dataclass(frozen=True)
class Refund:
    refund_id: str
    key: str
    payment_id: str
    amount: Decimal
    created_at: datetime


class PaymentProvider(Protocol):
    name: str

    def check_method(self, method: str) -> None:
        """Raise ``UnknownPaymentMethod`` for a method this provider does not take."""

    async def charge(self, *, key: str, amount: Decimal, currency: str, method: str) -> Charge: ...

    async def refund(self, *, key: str, payment_id: str, amount: Decimal) -> Refund: ...

    async def retrieve(self, key: str) -> Charge | None: ...
