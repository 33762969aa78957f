from datetime import datetime
from typing import Annotated

from beanie import PydanticObjectId
from pydantic import BaseModel, ConfigDict, Field

from shop.cart.schemas import PricedLineOut
from shop.kit.money import Amount
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
    provider: Annotated[
        str,
        Field(
            min_length=1,
            max_length=32,
            description='"mock" (the simulated provider, never in production), or "stripe" '
            "where the service has a Stripe key",
        ),
    ] = "mock"
    payment_method: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            examples=["pm_card_visa"],
            description="A PaymentMethod id; the simulated provider takes Stripe's test "
            "methods (pm_card_visa, pm_card_chargeDeclined, "
            "pm_card_chargeDeclinedInsufficientFunds, pm_card_authenticationRequired)",
        ),
    ]


class OrderLineOut(PricedLineOut):
    cart_discount_share: Amount
    net_total: Amount
    returned_quantity: int


class AppliedCartDiscountOut(BaseModel):
    discount_id: PydanticObjectId
    code: str | None
    amount: Amount


class PaymentOut(BaseModel):
    provider: str
    payment_id: str
    amount: Amount
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
    subtotal: Amount
    cart_discount: AppliedCartDiscountOut | None
    total: Amount
    currency: str
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    payment: PaymentOut | None
    refunded_total: Amount
    status_history: list[StatusChangeOut]


class NextActionOut(BaseModel):
    """What the customer's browser does to finish a payment that waits for them. For Stripe,
    ``stripe.handleNextAction({clientSecret: client_secret})`` (Stripe.js); the webhook then
    pays the order. For the simulated provider, ``POST /payments/mock/authenticate``."""

    type: str = Field(examples=["use_stripe_sdk"])
    payment_id: str = Field(description="The provider's payment (a Stripe PaymentIntent id)")
    client_secret: str


class PayOut(OrderOut):
    next_action: NextActionOut | None = Field(
        default=None,
        description="Set on a 202: the payment waits for the customer; the order stays "
        "pending_payment, held by this payment until its deadline",
    )


class OrderSummary(BaseModel):
    id: PydanticObjectId
    status: OrderStatus
    item_count: int
    subtotal: Amount
    total: Amount
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


class WebhookReceived(BaseModel):
    received: bool = True
    duplicate: bool = Field(description="The event was handled before; nothing changed")


class Authentication(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "ch_5f0c0a3f2b1d4e6f7a8b9c0d",
                    "client_secret": "ch_5f0c0a3f2b1d4e6f7a8b9c0d_secret_0a1b2c3d4e5f60718293a4b5",
                    "success": True,
                }
            ]
        },
    )

    payment_id: Annotated[str, Field(min_length=1, max_length=100)]
    client_secret: Annotated[str, Field(min_length=1, max_length=200)]
    success: bool = True
