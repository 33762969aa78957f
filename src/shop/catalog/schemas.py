from datetime import datetime
from typing import Annotated

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field

from shop.kit.money import Amount, Price

Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=5000)]
Stock = Annotated[int, Field(strict=True, ge=0, le=1_000_000_000)]


class ProductCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Enamel mug",
                    "description": "Camp mug, 350 ml, white with a blue rim.",
                    "price": "12.50",
                    "stock": 40,
                }
            ]
        },
    )

    name: Name
    description: Description = ""
    price: Price
    stock: Stock
    active: bool = True


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    stock: Stock | None = None
    active: bool | None = None


class ProductOut(BaseModel):
    id: PydanticObjectId
    name: str
    description: str
    price: Amount
    stock: int
    active: bool
    created_at: datetime
    updated_at: datetime
