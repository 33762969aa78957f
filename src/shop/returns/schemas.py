from datetime import datetime
from typing import Annotated

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shop.kit.money import Amount
from shop.orders.models import OrderStatus
from shop.returns.models import ReturnReason, ReturnStatus


class ReturnItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: PydanticObjectId
    quantity: Annotated[int, Field(strict=True, gt=0, le=10_000)]
    reason: ReturnReason


class ReturnCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "product_id": "6b0b40343079af398e056a8e",
                            "quantity": 1,
                            "reason": "damaged",
                        }
                    ],
                    "note": "The rim was chipped",
                }
            ]
        },
    )

    items: Annotated[list[ReturnItemIn], Field(min_length=1, max_length=100)]
    note: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("items")
    @classmethod
    def _one_entry_per_product(cls, items: list[ReturnItemIn]) -> list[ReturnItemIn]:
        if len({i.product_id for i in items}) != len(items):
            raise ValueError("list each product once")
        return items


class RejectReturn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(max_length=2000)] | None = None


class ReturnItemOut(BaseModel):
    product_id: PydanticObjectId
    quantity: int
    reason: ReturnReason
    refund_amount: Amount


class ReturnStatusChangeOut(BaseModel):
    status: ReturnStatus
    at: datetime
    reason: str | None


class ReturnOut(BaseModel):
    id: PydanticObjectId
    order_id: PydanticObjectId
    status: ReturnStatus
    items: list[ReturnItemOut]
    refund_amount: Amount
    note: str | None
    created_at: datetime
    updated_at: datetime
    status_history: list[ReturnStatusChangeOut]


class ReturnStatusOut(BaseModel):
    order_id: PydanticObjectId
    order_status: OrderStatus
    refunded_total: Amount
    returns: list[ReturnOut]
