from datetime import datetime

from beanie import PydanticObjectId
from pydantic import BaseModel

from shop.accounts.models import Role
from shop.orders.schemas import OrderOut
from shop.returns.schemas import ReturnOut


class AdminOrderOut(OrderOut):
    """An order as support sees it: whose it is, its payment attempts, its returns."""

    user_id: PydanticObjectId
    payment_attempts: int
    returns: list[ReturnOut]


class AdminUserOut(BaseModel):
    id: PydanticObjectId
    email: str
    role: Role
    created_at: datetime
