from datetime import datetime
from typing import Annotated

from beanie import PydanticObjectId
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shop.discounts.models import DiscountFields, DiscountKind, DiscountScope, Limit
from shop.kit.money import Amount, Money, Price


class DiscountCreate(DiscountFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Welcome, 10 % off",
                    "scope": "cart",
                    "kind": "percent",
                    "value": "10",
                    "code": "WELCOME10",
                    "per_user_limit": 1,
                }
            ]
        },
    )


class DiscountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    value: Price | None = None
    product_ids: list[PydanticObjectId] | None = Field(default=None, max_length=1000)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    min_subtotal: Money | None = None
    usage_limit: Limit | None = None
    per_user_limit: Limit | None = None
    active: bool | None = None


class DiscountOut(BaseModel):
    id: PydanticObjectId
    name: str
    scope: DiscountScope
    kind: DiscountKind
    value: Amount
    product_ids: list[PydanticObjectId]
    code: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    min_subtotal: Amount | None
    usage_limit: int | None
    per_user_limit: int | None
    times_used: int
    active: bool
    created_at: datetime
    updated_at: datetime
