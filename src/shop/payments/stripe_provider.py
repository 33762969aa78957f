"""Stripe, named ``stripe`` in requests, through its official SDK (async methods, HTTPX).

A charge is a PaymentIntent for the order's total in minor units and its currency, with the
order's id and the charge key in its metadata. It is created, then confirmed: two calls,
because localstripe refuses ``confirm=true`` at creation, which Stripe would also take.

Stripe keeps one PaymentIntent per idempotency key for 24 hours. The provider also keeps
which PaymentIntent each charge key made (``stripe_payment_intents``), before confirming it:
that is how ``retrieve`` and ``cancel`` find it, and what holds one PaymentIntent per key
against localstripe, which ignores ``Idempotency-Key``. Refunds are kept the same way
(``stripe_refunds``).

Stripe's answers that say nothing about the request (no connection, rate limited, its own
errors) are ``ProviderUnavailable`` for a charge and ``RefundFailed`` for a refund, which the
sweeper retries. The SDK retries each call twice first, with Stripe's idempotency key.
"""

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import stripe
from beanie import DecimalAnnotation, Document, Indexed
from pydantic import Field
from pymongo.errors import DuplicateKeyError

from shop.kit.clock import utcnow
from shop.kit.money import CENT
from shop.payments.provider import (
    Charge,
    ChargeStatus,
    NextAction,
    PaymentNotFound,
    ProviderUnavailable,
    Refund,
    RefundFailed,
    UnknownPaymentMethod,
)

log = logging.getLogger(__name__)

# Stripe's answers that say nothing about the request itself.
_UNAVAILABLE = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


class StripeIntent(Document):
    """The PaymentIntent a charge key made."""

    key: Annotated[str, Indexed(unique=True)]
    payment_intent: str
    order_id: str
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "stripe_payment_intents"


class StripeRefund(Document):
    key: Annotated[str, Indexed(unique=True)]
    refund_id: str
    payment_intent: str
    amount: DecimalAnnotation
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "stripe_refunds"

    def as_refund(self) -> Refund:
        return Refund(
            refund_id=self.refund_id,
            key=self.key,
            payment_id=self.payment_intent,
            amount=Decimal(self.amount),
            created_at=self.created_at,
        )


def _metadata(stripe_object: Any, name: str) -> str:
    return str((stripe_object.to_dict().get("metadata") or {}).get(name, ""))


def to_minor(amount: Decimal) -> int:
    """An amount in the currency's minor unit (the shop's currencies have two places)."""
    return int((amount / CENT).to_integral_exact())


def as_charge(intent: Any) -> Charge:
    """A PaymentIntent as the shop's charge: what it says now."""
    fields = intent.to_dict()
    status, failure, action = ChargeStatus.processing, None, None
    if intent.status == "succeeded":
        status = ChargeStatus.succeeded
    elif intent.status == "requires_action":
        status = ChargeStatus.requires_action
        action = NextAction("use_stripe_sdk", intent.id, intent.client_secret)
    elif intent.status in ("requires_payment_method", "canceled"):
        # Declined, authentication failed, or cancelled: this attempt is over.
        status = ChargeStatus.failed
        error = fields.get("last_payment_error") or {}
        failure = error.get("decline_code") or error.get("code") or intent.status
    return Charge(
        payment_id=intent.id,
        key=str((fields.get("metadata") or {}).get("charge_key", "")),
        amount=Decimal(intent.amount) * CENT,
        currency=str(intent.currency).upper(),
        method=str(fields.get("payment_method") or ""),
        status=status,
        failure_code=failure,
        created_at=datetime.fromtimestamp(intent.created, UTC),
        next_action=action,
    )


class StripeProvider:
    name = "stripe"

    def __init__(
        self,
        secret_key: str,
        api_base: str | None = None,
        *,
        localstripe: bool = False,
        timeout: float = 10,
    ) -> None:
        # Cards only, confirmed by the server: no redirect, so no return URL. localstripe
        # knows only the older spelling of that.
        self._methods: dict[str, Any] = (
            {"payment_method_types": ["card"]}
            if localstripe
            else {"automatic_payment_methods": {"enabled": True, "allow_redirects": "never"}}
        )
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=stripe.HTTPXClient(timeout=timeout),
            max_network_retries=2,
        )

    def check_method(self, method: str) -> None:
        if not method.startswith("pm_"):
            raise UnknownPaymentMethod("Stripe takes a PaymentMethod id (pm_...)")

    async def charge(
        self, *, key: str, amount: Decimal, currency: str, method: str, reference: str = ""
    ) -> Charge:
        self.check_method(method)
        if to_minor(amount) <= 0:
            raise UnknownPaymentMethod("Stripe cannot charge nothing")
        known = await StripeIntent.find_one(StripeIntent.key == key)
        try:
            if known is None:
                params: Any = {
                    "amount": to_minor(amount),
                    "currency": currency.lower(),
                    "payment_method": method,
                    "metadata": {"order_id": reference, "charge_key": key},
                    **self._methods,
                }
                intent = await self.client.v1.payment_intents.create_async(
                    params, {"idempotency_key": key}
                )
                known = StripeIntent(key=key, payment_intent=intent.id, order_id=reference)
                try:
                    await known.insert()
                except DuplicateKeyError:  # a concurrent charge with this key made one first
                    known = await StripeIntent.find_one(StripeIntent.key == key)
                    assert known is not None
            return await self._confirm(known.payment_intent, key)
        except stripe.InvalidRequestError as error:
            raise UnknownPaymentMethod(error.user_message or "Stripe refused the method") from None
        except _UNAVAILABLE as error:
            log.warning("Stripe is unavailable: %s", type(error).__name__)
            raise ProviderUnavailable(retry_after=5) from None

    async def _confirm(self, payment_intent: str, key: str) -> Charge:
        intent = await self.client.v1.payment_intents.retrieve_async(payment_intent)
        if intent.status != "requires_confirmation":
            return as_charge(intent)  # confirmed before: its outcome stands
        try:
            intent = await self.client.v1.payment_intents.confirm_async(
                payment_intent, options={"idempotency_key": f"{key}-confirm"}
            )
        except stripe.CardError:  # declined: the PaymentIntent says why
            intent = await self.client.v1.payment_intents.retrieve_async(payment_intent)
        return as_charge(intent)

    async def retrieve(self, key: str) -> Charge | None:
        known = await StripeIntent.find_one(StripeIntent.key == key)
        return None if known is None else await self.intent(known.payment_intent)

    async def cancel(self, key: str) -> Charge | None:
        known = await StripeIntent.find_one(StripeIntent.key == key)
        if known is None:
            return None
        try:
            return as_charge(
                await self.client.v1.payment_intents.cancel_async(known.payment_intent)
            )
        except stripe.InvalidRequestError:  # it ended meanwhile (succeeded, say)
            return await self.intent(known.payment_intent)
        except _UNAVAILABLE:
            raise ProviderUnavailable(retry_after=5) from None

    async def refund(self, *, key: str, payment_id: str, amount: Decimal) -> Refund:
        if existing := await StripeRefund.find_one(StripeRefund.key == key):
            return existing.as_refund()
        try:
            made = await self.client.v1.refunds.create_async(
                {
                    "payment_intent": payment_id,
                    "amount": to_minor(amount),
                    "metadata": {"refund_key": key},
                },
                {"idempotency_key": key},
            )
        except (*_UNAVAILABLE, stripe.InvalidRequestError) as error:
            raise RefundFailed(
                f"Stripe could not refund now ({type(error).__name__}); it will be retried"
            ) from None
        record = StripeRefund(key=key, refund_id=made.id, payment_intent=payment_id, amount=amount)
        try:
            await record.insert()
        except DuplicateKeyError:  # a concurrent refund with this key was kept first
            existing = await StripeRefund.find_one(StripeRefund.key == key)
            assert existing is not None
            return existing.as_refund()
        return record.as_refund()

    async def intent(self, payment_intent: str) -> Charge:
        """A PaymentIntent as Stripe has it now (a webhook's news may be older)."""
        try:
            return as_charge(await self.client.v1.payment_intents.retrieve_async(payment_intent))
        except stripe.InvalidRequestError:
            raise PaymentNotFound(f"Stripe has no PaymentIntent {payment_intent}") from None
        except _UNAVAILABLE:
            raise ProviderUnavailable(retry_after=5) from None

    async def refunds_of(self, payment_intent: str) -> list[Refund]:
        """Every refund of a PaymentIntent, as Stripe has them (for the audit)."""
        try:
            found = await self.client.v1.refunds.list_async(
                {"payment_intent": payment_intent, "limit": 100}
            )
        except _UNAVAILABLE:
            raise ProviderUnavailable(retry_after=5) from None
        return [
            Refund(
                refund_id=r.id,
                key=_metadata(r, "refund_key"),
                payment_id=payment_intent,
                amount=Decimal(r.amount) * CENT,
                created_at=datetime.fromtimestamp(r.created, UTC),
            )
            async for r in found.auto_paging_iter()
        ]
