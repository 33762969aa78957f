"""The one small interface every payment provider implements, and what it answers.

A provider is idempotent: a repeated ``charge`` or ``refund`` with the same key returns the
first result. A charge may end at once (succeeded, failed) or wait: for the customer to
authenticate (3-D Secure), or for the card network. A waiting charge ends later, and the
provider says so (a webhook); ``retrieve`` asks it, ``cancel`` stops a charge that waits.
``payments/mock.py`` is the simulated provider, ``payments/stripe_provider.py`` Stripe.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from shop.kit.errors import Conflict, NotFound, ShopError, Unprocessable
from shop.kit.money import ZERO

# The id of a payment or a refund of nothing, which no provider made.
NOTHING = "none-"


class ChargeStatus(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    requires_action = "requires_action"  # the customer must authenticate in the browser
    processing = "processing"  # the card network has not answered yet

    @property
    def waiting(self) -> bool:
        return self in (ChargeStatus.requires_action, ChargeStatus.processing)


class PaymentDeclined(ShopError):
    status, code, title = 402, "payment_declined", "Payment declined"


class InsufficientFunds(PaymentDeclined):
    code, title = "insufficient_funds", "Payment declined: insufficient funds"


class UnknownPaymentMethod(Unprocessable):
    code, title = "unknown_payment_method", "Unknown payment method"


class PaymentNotFound(NotFound):
    code, title = "payment_not_found", "No such payment"


class ProviderUnavailable(ShopError):
    status, code, title = 503, "payment_provider_unavailable", "The payment provider is unavailable"
    transient = True


class InvalidWebhook(ShopError):
    status, code, title = 400, "invalid_webhook_signature", "Invalid webhook signature"


class StripeNotConfigured(NotFound):
    code, title = "stripe_not_configured", "Stripe is not configured on this service"


class RefundFailed(ShopError):
    status, code, title = 502, "refund_failed", "The payment provider could not refund"


class RefundExceedsCharge(Conflict):
    code, title = "refund_exceeds_charge", "Refund larger than what is left of the charge"


DECLINE_ERRORS: dict[str, type[PaymentDeclined]] = {
    "card_declined": PaymentDeclined,
    "insufficient_funds": InsufficientFunds,
}


@dataclass(frozen=True)
class NextAction:
    """What the customer's browser does to finish a charge that waits for them: for Stripe,
    ``stripe.handleNextAction({clientSecret})``."""

    type: str
    payment_id: str
    client_secret: str


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
    next_action: NextAction | None = field(default=None, compare=False)

    @classmethod
    def of_nothing(cls, key: str, currency: str, method: str, at: datetime) -> "Charge":
        """What paying nothing (a free order) takes: no charge at any provider, which may not
        take one (Stripe's smallest is 0.50), so nothing of it to ask or to refund later."""
        return cls(
            payment_id=f"{NOTHING}{key}",
            key=key,
            amount=ZERO,
            currency=currency,
            method=method,
            status=ChargeStatus.succeeded,
            failure_code=None,
            created_at=at,
        )

    def raise_if_failed(self) -> None:
        if self.status is ChargeStatus.failed:
            refusal = DECLINE_ERRORS.get(self.failure_code or "", PaymentDeclined)
            raise refusal(decline_code=self.failure_code or "declined")


@dataclass(frozen=True)
class Refund:
    refund_id: str
    key: str
    payment_id: str
    amount: Decimal
    created_at: datetime

    @classmethod
    def of_nothing(cls, key: str, payment_id: str, at: datetime) -> "Refund":
        """What giving back nothing (a return of free items) takes: no refund at the provider."""
        return cls(f"{NOTHING}{key}", key, payment_id, ZERO, at)


class PaymentProvider(Protocol):
    name: str

    def check_method(self, method: str) -> None:
        """Raise ``UnknownPaymentMethod`` for a method this provider does not take."""

    async def charge(
        self, *, key: str, amount: Decimal, currency: str, method: str, reference: str = ""
    ) -> Charge:
        """Charge once per ``key``; ``reference`` (the order's id) goes with the charge."""

    async def refund(self, *, key: str, payment_id: str, amount: Decimal) -> Refund: ...

    async def retrieve(self, key: str) -> Charge | None:
        """The charge made with ``key`` as it stands now; None if none was made."""

    async def cancel(self, key: str) -> Charge | None:
        """Stop a charge that waits, so it can never succeed; the charge as it then stands
        (it may have succeeded just before)."""
