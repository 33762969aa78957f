from typing import Annotated

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field

from shop.kit.money import Amount
from shop.pricing import Quote

Quantity = Annotated[int, Field(strict=True, gt=0, le=10_000)]


class AddToCart(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"product_id": "6b0b40343079af398e056a8e", "quantity": 2}]},
    )

    product_id: PydanticObjectId
    quantity: Quantity = 1


class PricedLineOut(BaseModel):
    """A line as priced: the fields a cart line and an order line share."""

    product_id: PydanticObjectId
    name: str
    unit_price: Amount
    quantity: int
    line_subtotal: Amount
    discount: Amount
    line_total: Amount


class CartLineOut(PricedLineOut):
    available: bool = Field(description="False when the product was withdrawn; not in the totals")
    in_stock: bool = Field(description="False when less than this quantity is left to order")


class CartDiscountOut(BaseModel):
    code: str | None = Field(description="The promo code; null for an automatic discount")
    amount: Amount
    applied: bool
    reason: str | None = Field(
        description="Why the code does not apply now (a problem `code`, such as discount_expired)"
    )


class CartOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "product_id": "6b0b40343079af398e056a8e",
                            "name": "Enamel mug",
                            "unit_price": "12.50",
                            "quantity": 2,
                            "line_subtotal": "25.00",
                            "discount": "0.00",
                            "line_total": "25.00",
                            "available": True,
                            "in_stock": True,
                        }
                    ],
                    "total_quantity": 2,
                    "subtotal": "25.00",
                    "cart_discount": {
                        "code": "WELCOME10",
                        "amount": "2.50",
                        "applied": True,
                        "reason": None,
                    },
                    "total": "22.50",
                    "currency": "EUR",
                }
            ]
        }
    )

    items: list[CartLineOut]
    total_quantity: int
    subtotal: Amount = Field(description="Sum of the available lines' totals")
    cart_discount: CartDiscountOut | None
    total: Amount
    currency: str


def cart_out(quote: Quote) -> CartOut:
    return CartOut(
        items=[CartLineOut.model_validate(line, from_attributes=True) for line in quote.lines],
        total_quantity=quote.total_quantity,
        subtotal=quote.subtotal,
        cart_discount=CartDiscountOut.model_validate(quote.cart_discount, from_attributes=True)
        if quote.cart_discount
        else None,
        total=quote.total,
        currency=quote.currency,
    )


class ApplyCode(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"code": "WELCOME10"}]}
    )

    code: Annotated[str, Field(min_length=1, max_length=64)]


class MergedLineOut(BaseModel):
    product_id: PydanticObjectId
    requested: int = Field(description="Units in the guest's cart")
    added: int = Field(description="Units that went into the customer's cart")
    reason: str = Field(
        description="Why not all of them: insufficient_stock, line_quantity_exceeded, "
        "cart_full or product_unavailable",
        examples=["insufficient_stock"],
    )


class MergeOut(CartOut):
    capped: list[MergedLineOut] = Field(description="Lines of which only some units went over")
    left_out: list[MergedLineOut] = Field(description="Lines of which no unit went over")
