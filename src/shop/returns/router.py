from datetime import timedelta
from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from shop.deps import AdminUser, CurrentUser, PaymentProviders, Settings
from shop.documents import page_by_id
from shop.errors import Forbidden, responses
from shop.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUse,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    run_once,
)
from shop.orders.models import (
    OrderNotFound,
    ProductNotInOrder,
    ReturnNotAllowed,
    ReturnQuantityExceeded,
    ReturnWindowClosed,
)
from shop.orders.service import order_of_user
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
    ReturnPage,
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


@router.get("/{order_id}/return_status/", responses=responses(OrderNotFound))
async def return_status(
    order_id: PydanticObjectId, user: CurrentUser, providers: PaymentProviders
) -> ReturnStatusOut:
    order = await order_of_user(order_id, user.id, providers)
    assert order.id is not None
    return ReturnStatusOut(
        order_id=order.id,
        order_status=order.status,
        refunded_total=order.refunded_total,
        returns=[return_out(r) for r in await service.returns_of_order(order.id)],
    )


@admin_router.get("/", responses=responses(Forbidden))
async def list_returns(
    _: AdminUser,
    status: ReturnStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: PydanticObjectId | None = None,
) -> ReturnPage:
    """Returns, oldest first: ``status=requested`` is the queue waiting for a decision."""
    query = {} if status is None else {"status": status.value}
    page, next_cursor = await page_by_id(ReturnRequest, query, limit, cursor)
    return ReturnPage(items=[return_out(r) for r in page], next_cursor=next_cursor)


@admin_router.post(
    "/{return_id}/approve",
    responses=responses(ReturnNotFound, IllegalReturnTransition, Forbidden),
)
async def approve_return(
    return_id: PydanticObjectId, _: AdminUser, providers: PaymentProviders
) -> ReturnOut:
    """Approve and refund; on an approved return whose refund failed, try the refund again."""
    request = await service.get_return(return_id)
    if request.status not in (ReturnStatus.requested, ReturnStatus.approved):
        raise IllegalReturnTransition(f"The return is already {request.status}")
    return return_out(await service.approve_return(request, providers))


@admin_router.post(
    "/{return_id}/reject",
    responses=responses(ReturnNotFound, IllegalReturnTransition, Forbidden),
)
async def reject_return(
    return_id: PydanticObjectId, _: AdminUser, body: RejectReturn | None = None
) -> ReturnOut:
    request = await service.get_return(return_id)
    reason = body.reason if body else None
    return return_out(await service.reject_return(request, reason))
