"""Views for the shop's staff: find any order, see everything about it, find a customer.
Admins only (403 for customers); read-only, apart from settling an overdue order on read,
as every read of an order does."""

import re
from datetime import datetime

from beanie import PydanticObjectId
from fastapi import APIRouter, Query

from shop.accounts.models import User, normalize_email
from shop.admin.schemas import AdminOrderOut, AdminUserOut
from shop.deps import AdminUser, PaymentProviders
from shop.kit.docs import responses
from shop.kit.errors import Forbidden
from shop.kit.pagination import Cursor, InvalidCursor, Limit, Page, page_by_id
from shop.orders import service as orders
from shop.orders.models import OrderNotFound, OrderStatus
from shop.orders.schemas import OrderSummary
from shop.returns.service import returns_of_order

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/orders/",
    responses=responses(InvalidCursor, Forbidden),
    summary="List every customer's orders",
)
async def list_orders(
    _: AdminUser,
    providers: PaymentProviders,
    status: OrderStatus | None = None,
    user_id: PydanticObjectId | None = None,
    created_from: datetime | None = Query(default=None, description="Inclusive"),
    created_before: datetime | None = Query(default=None, description="Exclusive"),
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[OrderSummary]:
    """Every customer's orders, newest first; filter by status, customer and creation date."""
    found = await orders.find_orders(
        providers,
        limit=limit,
        cursor=cursor,
        status=status,
        user_id=user_id,
        created_from=created_from,
        created_before=created_before,
    )
    return found.shaped(OrderSummary.of)


@router.get(
    "/orders/{order_id}",
    responses=responses(OrderNotFound, Forbidden),
    summary="One order, in full, for support",
)
async def get_order(
    order_id: PydanticObjectId, _: AdminUser, providers: PaymentProviders
) -> AdminOrderOut:
    """One order with its payment, payment attempts, returns and every status change."""
    order = await orders.read_and_settle(order_id, None, providers)
    returns = await returns_of_order(order_id)
    return AdminOrderOut.model_validate(
        {**order.model_dump(), "id": order.id, "returns": [r.model_dump() for r in returns]}
    )


@router.get(
    "/users/", responses=responses(InvalidCursor, Forbidden), summary="Find customer accounts"
)
async def list_users(
    _: AdminUser,
    email: str | None = Query(
        default=None, max_length=254, description="Emails that start with this, any case"
    ),
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[AdminUserOut]:
    """Accounts in the order they were created; ``email`` finds them by the start of their
    address (served by the email index)."""
    query = {} if email is None else {"email": {"$regex": f"^{re.escape(normalize_email(email))}"}}
    found = await page_by_id(User, query, limit, cursor)
    return found.shaped(lambda user: AdminUserOut.model_validate(user, from_attributes=True))
