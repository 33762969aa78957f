from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self

from beanie import PydanticObjectId
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shop.discounts.models import DiscountKind, DiscountScope
from shop.money import Money, Price

Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,32}$", examples=["WELCOME10"])]
Limit = Annotated[int, Field(strict=True, ge=1, le=10_000_000)]


class DiscountFields(BaseModel):
    """A discount's definition, checked as a whole (on create, and after every update)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    scope: DiscountScope
    kind: DiscountKind
    value: Price = Field(description="Percent (0 < value <= 100) or an amount of money")
    product_ids: list[PydanticObjectId] = Field(default_factory=list, max_length=1000)
    code: Code | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    min_subtotal: Money | None = None
    usage_limit: Limit | None = None
    per_user_limit: Limit | None = None
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind is DiscountKind.percent and self.value > Decimal(100):
            raise ValueError("a percent discount is at most 100")
        if self.scope is DiscountScope.product:
            if not self.product_ids:
                raise ValueError("a product discount names its product_ids")
            if self.code is not None or self.min_subtotal is not None:
                raise ValueError("code and min_subtotal are for cart discounts")
        elif self.product_ids:
            raise ValueError("a cart discount has no product_ids")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.code is not None:
            self.code = self.code.upper()
        return self


class DiscountCreate(DiscountFields):
    pass


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
    value: Money
    product_ids: list[PydanticObjectId]
    code: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    min_subtotal: Money | None
    usage_limit: int | None
    per_user_limit: int | None
    times_used: int
    active: bool
    created_at: datetime
    updated_at: datetime


class DiscountPage(BaseModel):
    items: list[DiscountOut]
    next_cursor: str | None
