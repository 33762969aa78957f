from typing import Annotated

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field

from shop.money import Money

Quantity = Annotated[int, Field(strict=True, gt=0, le=10_000)]


class AddToCart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: PydanticObjectId
    quantity: Quantity = 1


class CartLineOut(BaseModel):
    product_id: PydanticObjectId
    name: str
    unit_price: Money
    quantity: int
    line_subtotal: Money
    discount: Money
    line_total: Money
    available: bool = Field(description="False when the product was withdrawn; not in the totals")


class CartOut(BaseModel):
    items: list[CartLineOut]
    total_quantity: int
    subtotal: Money
    total: Money
    currency: str
