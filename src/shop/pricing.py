"""The one pricing function, shared by the cart view and checkout."""

from dataclasses import dataclass
from decimal import Decimal

from beanie import PydanticObjectId

from shop.cart.models import CartItem
from shop.catalog.models import Product
from shop.money import ZERO, round_money


@dataclass(frozen=True)
class PricedLine:
    product_id: PydanticObjectId
    name: str
    unit_price: Decimal
    quantity: int
    line_subtotal: Decimal
    discount: Decimal
    line_total: Decimal
    available: bool


@dataclass(frozen=True)
class Quote:
    lines: list[PricedLine]
    subtotal: Decimal
    total: Decimal
    currency: str

    @property
    def total_quantity(self) -> int:
        return sum(line.quantity for line in self.lines if line.available)

    @property
    def payable_lines(self) -> list[PricedLine]:
        return [line for line in self.lines if line.available]


def price_items(
    items: list[CartItem], products: dict[PydanticObjectId, Product], currency: str
) -> Quote:
    lines = []
    for item in items:
        product = products.get(item.product_id)
        available = product is not None and product.active
        unit_price = product.unit_price if product is not None else ZERO
        line_subtotal = round_money(unit_price * item.quantity)
        lines.append(
            PricedLine(
                product_id=item.product_id,
                name=product.name if product is not None else "(removed product)",
                unit_price=unit_price,
                quantity=item.quantity,
                line_subtotal=line_subtotal,
                discount=ZERO,
                line_total=line_subtotal,
                available=available,
            )
        )
    subtotal = sum((line.line_total for line in lines if line.available), ZERO)
    return Quote(lines=lines, subtotal=subtotal, total=subtotal, currency=currency)
