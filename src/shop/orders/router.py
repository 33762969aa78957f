from datetime import timedelta

from beanie import PydanticObjectId
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from shop.cart.models import InsufficientStock
from shop.deps import CurrentUser, PaymentProviders, Settings
from shop.docs import responses
from shop.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUse,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    run_once,
)
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
from shop.orders.schemas import OrderOut, OrderSummary, PayRequest
from shop.pagination import Cursor, InvalidCursor, Limit, Page
from shop.payments.provider import InsufficientFunds, PaymentDeclined, UnknownPaymentMethod

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
    response_model=OrderOut,
    responses=responses(
        IdempotencyKeyMissing,
        PaymentDeclined,
        InsufficientFunds,
        OrderNotFound,
        OrderAlreadyPaid,
        OrderExpired,
        OrderEmpty,
        PaymentInProgress,
        IdempotencyKeyInUse,
        IdempotencyKeyReused,
        UnknownPaymentMethod,
    ),
    summary="Pay an order",
)
async def pay_order(
    body: PayRequest,
    user: CurrentUser,
    settings: Settings,
    providers: PaymentProviders,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Pay a pending order. Retries with the same ``Idempotency-Key`` never charge twice."""

    async def pay() -> OrderOut:
        order = await service.pay_order(
            body.order_id,
            user.id,
            body.provider,
            body.payment_method,
            providers,
            timedelta(seconds=settings.payment_hold_seconds),
            idempotency_key,
        )
        return order_out(order)

    return await run_once(
        user_id=user.id,
        operation="order.pay",
        key=idempotency_key,
        request=body,
        keep=timedelta(hours=settings.idempotency_key_hours),
        action=pay,
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
