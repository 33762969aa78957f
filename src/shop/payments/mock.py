"""The simulated payment provider, named ``mock`` in requests.

It behaves like a real one: it keeps its own records of charges and refunds in its own
collections, declines the documented test methods, and is idempotent. The method
``pm_card_authenticationRequired`` (as Stripe names its test card 4000 0027 6000 3184) waits
for the customer to authenticate; ``authenticate`` stands in for the customer's browser.
"""

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Annotated, ClassVar

from beanie import DecimalAnnotation, Document, Indexed
from bson import Decimal128
from pydantic import Field
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from shop.kit.clock import utcnow
from shop.kit.db import in_transaction
from shop.kit.money import ZERO
from shop.payments.provider import (
    Charge,
    ChargeStatus,
    NextAction,
    PaymentNotFound,
    Refund,
    RefundExceedsCharge,
    RefundFailed,
    UnknownPaymentMethod,
)


class ProviderCharge(Document):
    key: Annotated[str, Indexed(unique=True)]
    payment_id: Annotated[str, Indexed(unique=True)]
    amount: DecimalAnnotation
    amount_refunded: DecimalAnnotation = ZERO
    currency: str
    method: str
    status: ChargeStatus
    failure_code: str | None = None
    reference: str = ""  # the order's id
    client_secret: str | None = None  # of a charge that waits for the customer
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "mock_provider_charges"

    def as_charge(self) -> Charge:
        waits = self.status is ChargeStatus.requires_action and self.client_secret is not None
        return Charge(
            payment_id=self.payment_id,
            key=self.key,
            amount=Decimal(self.amount),
            currency=self.currency,
            method=self.method,
            status=self.status,
            failure_code=self.failure_code,
            created_at=self.created_at,
            next_action=NextAction("authenticate", self.payment_id, self.client_secret or "")
            if waits
            else None,
        )


class ProviderRefund(Document):
    key: Annotated[str, Indexed(unique=True)]
    refund_id: str
    payment_id: str
    amount: DecimalAnnotation
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "mock_provider_refunds"

    def as_refund(self) -> Refund:
        return Refund(
            refund_id=self.refund_id,
            key=self.key,
            payment_id=self.payment_id,
            amount=Decimal(self.amount),
            created_at=self.created_at,
        )


class MockProvider:
    """The simulated provider, named ``mock`` in requests. Test methods as Stripe names them."""

    name = "mock"
    METHODS: ClassVar[dict[str, str | None]] = {
        "pm_card_visa": None,
        "pm_card_mastercard": None,
        "pm_card_authenticationRequired": None,  # succeeds once the customer authenticates
        "pm_card_chargeDeclined": "card_declined",
        "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
    }
    NEEDS_AUTHENTICATION = "pm_card_authenticationRequired"
    AUTHENTICATION_FAILED = "payment_intent_authentication_failure"  # Stripe's code

    def __init__(self) -> None:
        # Refunds fail while this is set: a stand-in for the provider being unreachable.
        self.refunds_unavailable = False

    def check_method(self, method: str) -> None:
        if method not in self.METHODS:
            raise UnknownPaymentMethod(
                f"{method!r} is not one of {', '.join(self.METHODS)}", methods=list(self.METHODS)
            )

    async def charge(
        self, *, key: str, amount: Decimal, currency: str, method: str, reference: str = ""
    ) -> Charge:
        self.check_method(method)
        failure = self.METHODS[method]
        payment_id = f"ch_{secrets.token_hex(12)}"
        status = ChargeStatus.failed if failure else ChargeStatus.succeeded
        if method == self.NEEDS_AUTHENTICATION:
            status = ChargeStatus.requires_action
        record = ProviderCharge(
            key=key,
            payment_id=payment_id,
            amount=amount,
            currency=currency,
            method=method,
            status=status,
            failure_code=failure,
            reference=reference,
            client_secret=f"{payment_id}_secret_{secrets.token_hex(12)}"
            if status is ChargeStatus.requires_action
            else None,
        )
        try:
            await record.insert()
        except DuplicateKeyError:
            existing = await ProviderCharge.find_one(ProviderCharge.key == key)
            assert existing is not None
            return existing.as_charge()
        return record.as_charge()

    async def refund(self, *, key: str, payment_id: str, amount: Decimal) -> Refund:
        if existing := await ProviderRefund.find_one(ProviderRefund.key == key):
            return existing.as_refund()
        if self.refunds_unavailable:
            raise RefundFailed("The payment provider is unavailable; the refund can be retried")
        charge = await ProviderCharge.find_one(ProviderCharge.payment_id == payment_id)
        if charge is None or charge.status is not ChargeStatus.succeeded:
            raise RefundFailed(f"No successful charge {payment_id}")
        record = ProviderRefund(
            key=key, refund_id=f"re_{secrets.token_hex(12)}", payment_id=payment_id, amount=amount
        )

        async def book(session: AsyncClientSession) -> Refund:
            # A concurrent refund with this key conflicts with this one and wins; on the
            # retry, its refund is found here.
            if done := await ProviderRefund.find_one(ProviderRefund.key == key, session=session):
                return done.as_refund()
            # Never refund more than was charged, however many refunds run at once.
            taken = await ProviderCharge.get_pymongo_collection().update_one(
                {
                    "payment_id": payment_id,
                    "amount_refunded": {"$lte": Decimal128(Decimal(charge.amount) - amount)},
                },
                {"$inc": {"amount_refunded": Decimal128(amount)}},
                session=session,
            )
            if taken.matched_count == 0:
                raise RefundExceedsCharge()
            await record.insert(session=session)
            return record.as_refund()

        try:
            return await in_transaction(book)
        except DuplicateKeyError:  # a concurrent refund with the same key won
            existing = await ProviderRefund.find_one(ProviderRefund.key == key)
            assert existing is not None
            return existing.as_refund()

    async def retrieve(self, key: str) -> Charge | None:
        found = await ProviderCharge.find_one(ProviderCharge.key == key)
        return None if found is None else found.as_charge()

    async def cancel(self, key: str) -> Charge | None:
        await self._finish_waiting({"key": key}, ChargeStatus.failed, "canceled")
        return await self.retrieve(key)

    async def authenticate(
        self, payment_id: str, client_secret: str, success: bool
    ) -> tuple[Charge, str]:
        """What the customer's browser does: authentication completed, or failed. Only a
        charge that still waits moves; the charge as it then stands, and its reference."""
        if success:
            await self._finish_waiting(
                {"payment_id": payment_id, "client_secret": client_secret},
                ChargeStatus.succeeded,
                None,
            )
        else:
            await self._finish_waiting(
                {"payment_id": payment_id, "client_secret": client_secret},
                ChargeStatus.failed,
                self.AUTHENTICATION_FAILED,
            )
        found = await ProviderCharge.find_one(
            {"payment_id": payment_id, "client_secret": client_secret}
        )
        if found is None:
            raise PaymentNotFound()
        return found.as_charge(), found.reference

    @staticmethod
    async def _finish_waiting(
        match: dict[str, object], status: ChargeStatus, failure: str | None
    ) -> None:
        await ProviderCharge.get_pymongo_collection().update_one(
            {**match, "status": ChargeStatus.requires_action.value},
            {"$set": {"status": status.value, "failure_code": failure}},
        )
