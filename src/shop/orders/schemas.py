from datetime import datetime
from typing import Annotated, Literal

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field

from shop.cart.schemas import PricedLineOut
from shop.money import Money
from shop.orders.models import Order, OrderStatus


class PayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "order_id": "6b0c7a1e2f3d4c5b6a798012",
                    "provider": "mock",
                    "payment_method": "pm_card_visa",
                }
            ]
        },
    )

    order_id: PydanticObjectId
    provider: Literal["mock"] = "mock"
    payment_method: Annotated[str, Field(min_length=1, max_length=100, examples=["pm_card_visa"])]


class OrderLineOut(PricedLineOut):
    cart_discount_share: Money
    net_total: Money
    returned_quantity: int


class AppliedCartDiscountOut(BaseModel):
    discount_id: PydanticObjectId
    code: str | None
    amount: Money


class PaymentOut(BaseModel):
    provider: str
    payment_id: str
    amount: Money
    method: str
    paid_at: datetime


class StatusChangeOut(BaseModel):
    status: OrderStatus
    at: datetime
    reason: str | None


class OrderOut(BaseModel):
    id: PydanticObjectId
    status: OrderStatus
    lines: list[OrderLineOut]
    subtotal: Money
    cart_discount: AppliedCartDiscountOut | None
    total: Money
    currency: str
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    payment: PaymentOut | None
    refunded_total: Money
    status_history: list[StatusChangeOut]


class OrderSummary(BaseModel):
    id: PydanticObjectId
    status: OrderStatus
    item_count: int
    subtotal: Money
    total: Money
    currency: str
    created_at: datetime

    @classmethod
    def of(cls, order: Order) -> "OrderSummary":
        assert order.id is not None
        return cls(
            id=order.id,
            status=order.status,
            item_count=sum(line.quantity for line in order.lines),
            subtotal=order.subtotal,
            total=order.total,
            currency=order.currency,
            created_at=order.created_at,
        )
