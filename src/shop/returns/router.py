from datetime import timedelta

from beanie import PydanticObjectId
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from shop.deps import AdminUser, CurrentUser, PaymentProviders, Settings
from shop.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUse,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    run_once,
)
from shop.kit.docs import responses
from shop.kit.errors import Forbidden
from shop.kit.pagination import Cursor, InvalidCursor, Limit, Page, page_by_id
from shop.orders.models import (
    OrderNotFound,
    ProductNotInOrder,
    ReturnNotAllowed,
    ReturnQuantityExceeded,
    ReturnWindowClosed,
)
from shop.orders.service import read_and_settle
from shop.returns import service
from shop.returns.models import (
    IllegalReturnTransition,
    ReturnNotFound,
    ReturnRequest,
    ReturnStatus,
)
from shop.returns.schemas import (
    RejectReturn,
    ReturnCreate,
    ReturnOut,
    ReturnStatusOut,
)

router = APIRouter(prefix="/order", tags=["returns"])
admin_router = APIRouter(prefix="/admin/returns", tags=["returns"])


def return_out(request: ReturnRequest) -> ReturnOut:
    return ReturnOut.model_validate(request, from_attributes=True)


@router.post(
    "/{order_id}/return/",
    status_code=status.HTTP_201_CREATED,
    response_model=ReturnOut,
    responses=responses(
        IdempotencyKeyMissing,
        OrderNotFound,
        ReturnNotAllowed,
        ReturnWindowClosed,
        ReturnQuantityExceeded,
        ProductNotInOrder,
        IdempotencyKeyInUse,
        IdempotencyKeyReused,
    ),
    summary="Return items of a paid order",
)
async def request_return(
    order_id: PydanticObjectId,
    body: ReturnCreate,
    user: CurrentUser,
    settings: Settings,
    providers: PaymentProviders,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Return items of a paid order. The refund is what was paid for those units.

    With automatic approval the refund is issued at once (status ``refunded``); a return
    whose refund could not be made yet shows ``approved`` and is retried.
    """

    async def create() -> ReturnOut:
        request = await service.request_return(order_id, user.id, body, settings, providers)
        return return_out(request)

    return await run_once(
        user_id=user.id,
        operation="order.return",
        key=idempotency_key,
        request={"order_id": str(order_id), "body": body},
        keep=timedelta(hours=settings.idempotency_key_hours),
        action=create,
        status_code=status.HTTP_201_CREATED,
    )


@router.get(
    "/{order_id}/return_status/",
    responses=responses(OrderNotFound),
    summary="The returns of an order and their refunds",
)
async def return_status(
    order_id: PydanticObjectId, user: CurrentUser, providers: PaymentProviders
) -> ReturnStatusOut:
    """The order's status, what was refunded in all, and each return with its items and status."""
    order = await read_and_settle(order_id, user.id, providers)
    assert order.id is not None
    return ReturnStatusOut(
        order_id=order.id,
        order_status=order.status,
        refunded_total=order.refunded_total,
        returns=[return_out(r) for r in await service.returns_of_order(order.id)],
    )


@admin_router.get(
    "/", responses=responses(InvalidCursor, Forbidden), summary="List returns (admin)"
)
async def list_returns(
    _: AdminUser,
    status: ReturnStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[ReturnOut]:
    """Returns, oldest first: ``status=requested`` is the queue waiting for a decision."""
    query = {} if status is None else {"status": status.value}
    return (await page_by_id(ReturnRequest, query, limit, cursor)).shaped(return_out)


@admin_router.post(
    "/{return_id}/approve",
    responses=responses(ReturnNotFound, IllegalReturnTransition, Forbidden),
    summary="Approve a return and refund it (admin)",
)
async def approve_return(
    return_id: PydanticObjectId, _: AdminUser, providers: PaymentProviders
) -> ReturnOut:
    """Approve and refund; on an approved return whose refund failed, try the refund again."""
    request = await service.get_return(return_id)
    return return_out(await service.approve_return(request, providers))


@admin_router.post(
    "/{return_id}/reject",
    responses=responses(ReturnNotFound, IllegalReturnTransition, Forbidden),
    summary="Reject a return (admin)",
)
async def reject_return(
    return_id: PydanticObjectId, _: AdminUser, body: RejectReturn | None = None
) -> ReturnOut:
    """Reject a requested return: its units become returnable again. The optional `reason`
    is kept."""
    request = await service.get_return(return_id)
    reason = body.reason if body else None
    return return_out(await service.reject_return(request, reason))
