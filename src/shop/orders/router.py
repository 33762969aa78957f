from datetime import timedelta
from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Header, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shop.cart.models import InsufficientStock
from shop.deps import CurrentUser, PaymentProviders, Settings
from shop.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUse,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    run_once,
)
from shop.kit.docs import responses
from shop.kit.pagination import Cursor, InvalidCursor, Limit, Page
from shop.orders import service
from shop.orders.models import (
    CartEmpty,
    Order,
    OrderAlreadyPaid,
    OrderCancelled,
    OrderEmpty,
    OrderExpired,
    OrderNotFound,
    OrderStatus,
    PaymentInProgress,
    ProductUnavailable,
)
from shop.orders.schemas import (
    Authentication,
    NextActionOut,
    OrderOut,
    OrderSummary,
    PayOut,
    PayRequest,
    WebhookReceived,
)
from shop.orders.webhooks import handle_event, verified_event
from shop.payments.mock import MockProvider
from shop.payments.provider import (
    InsufficientFunds,
    InvalidWebhook,
    PaymentDeclined,
    PaymentNotFound,
    ProviderUnavailable,
    StripeNotConfigured,
    UnknownPaymentMethod,
)

router = APIRouter(prefix="/order", tags=["orders"])


def order_out(order: Order) -> OrderOut:
    return OrderOut.model_validate(order, from_attributes=True)


@router.post(
    "/create/",
    status_code=status.HTTP_201_CREATED,
    responses=responses(CartEmpty, InsufficientStock, ProductUnavailable),
    summary="Place an order from the cart",
)
async def create_order(user: CurrentUser, settings: Settings) -> OrderOut:
    """Order what is in the cart. Stock is reserved until payment or the payment deadline."""
    return order_out(await service.create_order(user.id, settings))


@router.post(
    "/pay/",
    response_model=PayOut,
    responses={
        202: {
            "model": PayOut,
            "description": "The payment waits for the customer (3-D Secure): the browser "
            "finishes it with `next_action`, and the provider's webhook pays the order",
        },
        **responses(
            IdempotencyKeyMissing,
            PaymentDeclined,
            InsufficientFunds,
            OrderNotFound,
            OrderAlreadyPaid,
            OrderExpired,
            OrderCancelled,
            OrderEmpty,
            PaymentInProgress,
            IdempotencyKeyInUse,
            IdempotencyKeyReused,
            UnknownPaymentMethod,
            ProviderUnavailable,
        ),
    },
    summary="Pay an order",
)
async def pay_order(
    body: PayRequest,
    user: CurrentUser,
    settings: Settings,
    providers: PaymentProviders,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Pay a pending order. Retries with the same ``Idempotency-Key`` never charge twice.

    200: paid. 202: the payment waits for the customer to authenticate (3-D Secure); the
    order stays `pending_payment`, held by this payment, until the provider's webhook pays
    it (or frees it, when authentication fails) or its deadline cancels both.
    """

    if body.provider not in providers:  # refused as the body's other invalid fields are
        offered = " or ".join(repr(name) for name in providers)
        raise RequestValidationError(
            [
                {
                    "type": "literal_error",
                    "loc": ("body", "provider"),
                    "msg": f"Input should be {offered}" if offered else "No provider is offered",
                    "input": body.provider,
                }
            ]
        )

    async def pay() -> PayOut:
        order, action = await service.pay_order(
            body.order_id,
            user.id,
            body.provider,
            body.payment_method,
            providers,
            timedelta(seconds=settings.payment_hold_seconds),
            idempotency_key,
        )
        out = PayOut.model_validate(order, from_attributes=True)
        if action is not None:
            out.next_action = NextActionOut.model_validate(action, from_attributes=True)
        return out

    return await run_once(
        user_id=user.id,
        operation="order.pay",
        key=idempotency_key,
        request=body,
        keep=timedelta(hours=settings.idempotency_key_hours),
        action=pay,
        status_code=lambda out: 202 if isinstance(out, PayOut) and out.next_action else 200,
    )


@router.get("/history/", responses=responses(InvalidCursor), summary="Your orders, newest first")
async def order_history(
    user: CurrentUser,
    providers: PaymentProviders,
    limit: Limit = 20,
    cursor: Cursor = None,
    status: OrderStatus | None = None,
) -> Page[OrderSummary]:
    """The caller's orders, newest first."""
    found = await service.order_history(
        user.id, providers, limit=limit, cursor=cursor, status=status
    )
    return found.shaped(OrderSummary.of)


@router.post(
    "/{order_id}/cancel/",
    responses=responses(OrderNotFound, OrderAlreadyPaid, OrderCancelled, PaymentInProgress),
    summary="Cancel an unpaid order",
)
async def cancel_order(
    order_id: PydanticObjectId, user: CurrentUser, providers: PaymentProviders
) -> OrderOut:
    """Cancel an unpaid order. Its reserved stock and discount redemptions are released."""
    return order_out(await service.cancel_order(order_id, user.id, providers))


@router.get("/{order_id}/", responses=responses(OrderNotFound), summary="One of your orders")
async def get_order(
    order_id: PydanticObjectId, user: CurrentUser, providers: PaymentProviders
) -> OrderOut:
    """One of the caller's orders, with every status change it went through."""
    return order_out(await service.read_and_settle(order_id, user.id, providers))


payments_router = APIRouter(prefix="/payments", tags=["payments"])


@payments_router.post(
    "/stripe/webhook",
    responses=responses(InvalidWebhook, StripeNotConfigured, ProviderUnavailable),
    summary="Stripe's events (its webhook endpoint)",
)
async def stripe_webhook(
    request: Request,
    settings: Settings,
    providers: PaymentProviders,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> WebhookReceived:
    """Where Stripe posts `payment_intent.succeeded` and `payment_intent.payment_failed`.

    Signed with the endpoint's secret (`SHOP_STRIPE_WEBHOOK_SECRET`), or refused with 400 and
    nothing changed. A repeated event is acknowledged and changes nothing; other event types
    are acknowledged and ignored. A success for an order that was cancelled meanwhile is
    refunded.
    """
    secret = settings.stripe_webhook_secret
    if "stripe" not in providers or secret is None:
        raise StripeNotConfigured()
    event = verified_event(await request.body(), stripe_signature, secret.get_secret_value())
    return WebhookReceived(duplicate=not await handle_event(event, providers))


@payments_router.post(
    "/mock/authenticate",
    responses=responses(PaymentNotFound),
    summary="Finish a simulated 3-D Secure check (development only)",
)
async def authenticate_mock_payment(body: Authentication, providers: PaymentProviders) -> OrderOut:
    """What the customer's browser does for a simulated payment that answered 202 (method
    `pm_card_authenticationRequired`): `success: true` completes it and pays the order,
    `false` fails it and the order may be paid again. Takes the `next_action` of that 202.
    Served only where the simulated provider is offered (never in production)."""
    mock = providers.get("mock")
    if not isinstance(mock, MockProvider):
        raise PaymentNotFound()
    charge, reference = await mock.authenticate(body.payment_id, body.client_secret, body.success)
    order = await service.record_charge(PydanticObjectId(reference), charge, "mock", providers)
    if order is None:
        raise PaymentNotFound()
    return order_out(order)
