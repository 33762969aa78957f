"""Stripe's webhooks: each event checked for Stripe's signature, handled once, in any order.

An event's id is kept for ``KEEP_EVENTS`` (a TTL index): Stripe sends an event again until
it is acknowledged, for up to three days, and a repeat is acknowledged and changes nothing.
An event's news may be older than the PaymentIntent's state (events arrive out of order),
so the PaymentIntent is read from Stripe, and the order moves by what it says now.
"""

import contextlib
from datetime import datetime, timedelta
from typing import Annotated, Any

import stripe
from beanie import Document, Indexed, PydanticObjectId
from bson.errors import InvalidId
from pymongo.errors import DuplicateKeyError

from shop.kit.clock import utcnow
from shop.orders.service import Providers, record_charge
from shop.payments.provider import InvalidWebhook, PaymentNotFound
from shop.payments.stripe_provider import StripeProvider

KEEP_EVENTS = timedelta(days=30)
PAYMENT_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed")


class StripeEvent(Document):
    """An event handled: its id, kept long enough to recognise Stripe's repeats."""

    id: str  # type: ignore[assignment]  # Stripe's event id (evt_...)
    type: str
    about: str | None = None  # the id of the object it is about (a PaymentIntent)
    received_at: Annotated[datetime, Indexed(expireAfterSeconds=int(KEEP_EVENTS.total_seconds()))]

    class Settings:
        name = "stripe_events"


def verified_event(payload: bytes, signature: str | None, secret: str) -> Any:
    """The event, if Stripe signed it with ``secret`` within the SDK's tolerance (5 min)."""
    try:
        return stripe.Webhook.construct_event(payload, signature or "", secret)
    except (ValueError, stripe.SignatureVerificationError) as error:
        raise InvalidWebhook(str(error) or "The signature does not match the payload") from None


async def handle_event(event: Any, providers: Providers) -> bool:
    """Handle one verified event; False when it was handled before (nothing changes)."""
    if await StripeEvent.get(event.id) is not None:
        return False
    if event.type in PAYMENT_EVENTS:
        provider = providers["stripe"]
        assert isinstance(provider, StripeProvider)
        news = event.data.object
        with contextlib.suppress(PaymentNotFound):  # not a PaymentIntent Stripe knows: ignored
            charge = await provider.intent(news.id)  # as it stands now, not as the event says
            await record_charge(_order_id(news), charge, "stripe", providers)
    # The same event handled at the same time: the order moved once, whichever kept it.
    with contextlib.suppress(DuplicateKeyError):
        about = event.data.object.to_dict().get("id")
        await StripeEvent(id=event.id, type=event.type, about=about, received_at=utcnow()).insert()
    return True


def _order_id(intent: Any) -> PydanticObjectId | None:
    try:
        return PydanticObjectId((intent.to_dict().get("metadata") or {}).get("order_id"))
    except (InvalidId, TypeError):
        return None  # not one of the shop's PaymentIntents
