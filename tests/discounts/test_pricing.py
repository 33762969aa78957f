"""The pricing rules, on the pure pricing function and the allocation."""

from datetime import timedelta
from decimal import Decimal

from beanie import PydanticObjectId

from shop.cart.models import CartItem
from shop.catalog.models import Product
from shop.discounts.models import Discount, DiscountKind, DiscountScope
from shop.kit.clock import utcnow
from shop.pricing import PricingContext, Quote, allocate, price

NOW = utcnow()


def product(price_: str) -> Product:
    return Product(id=PydanticObjectId(), name="P", price=Decimal(price_), stock=100)


def on_sale(item: Product, kind: DiscountKind, value: str, **extra: object) -> Discount:
    return Discount(
        id=PydanticObjectId(),
        name="sale",
        scope=DiscountScope.product,
        kind=kind,
        value=Decimal(value),
        product_ids=[item.id],
        **extra,
    )


def cart_discount(kind: DiscountKind, value: str, **extra: object) -> Discount:
    return Discount(
        id=PydanticObjectId(),
        name="cart",
        scope=DiscountScope.cart,
        kind=kind,
        value=Decimal(value),
        **extra,
    )


def quote(
    lines: list[tuple[Product, int]], discounts: list[Discount], code: str | None = None
) -> Quote:
    items = [CartItem(product_id=p.id, quantity=q) for p, q in lines]
    products = {p.id: p for p, _ in lines if p.id is not None}
    return price(items, code, PricingContext(products, discounts, {}, NOW, "EUR"))


def test_the_best_product_discount_wins_and_they_do_not_stack() -> None:
    shirt = product("20.00")
    ten_percent = on_sale(shirt, DiscountKind.percent, "10")
    three_off = on_sale(shirt, DiscountKind.fixed, "3.00")
    priced = quote([(shirt, 2)], [ten_percent, three_off])
    line = priced.lines[0]
    assert (line.discount, line.discount_id, line.line_total) == (
        Decimal("6.00"),
        three_off.id,
        Decimal("34.00"),
    )
    assert priced.discounts_used == [three_off]


def test_a_window_not_started_or_already_ended_is_not_applied() -> None:
    mug = product("10.00")
    later = on_sale(mug, DiscountKind.percent, "50", starts_at=NOW + timedelta(hours=1))
    over = on_sale(mug, DiscountKind.percent, "50", ends_at=NOW - timedelta(seconds=1))
    running = on_sale(
        mug,
        DiscountKind.percent,
        "10",
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    assert quote([(mug, 1)], [later, over]).total == Decimal("10.00")
    assert quote([(mug, 1)], [later, over, running]).total == Decimal("9.00")


def test_a_fixed_discount_above_the_price_gives_zero_not_less() -> None:
    pen = product("1.50")
    priced = quote([(pen, 3)], [on_sale(pen, DiscountKind.fixed, "5.00")])
    assert (priced.lines[0].line_total, priced.total) == (Decimal("0.00"), Decimal("0.00"))
    cart_off = cart_discount(DiscountKind.fixed, "100.00")
    assert quote([(pen, 1)], [cart_off]).total == Decimal("0.00")


def test_min_subtotal_is_needed_for_a_cart_discount() -> None:
    book = product("30.00")
    big_spender = cart_discount(DiscountKind.fixed, "10.00", min_subtotal=Decimal("50.00"))
    assert quote([(book, 1)], [big_spender]).cart_discount is None
    assert quote([(book, 2)], [big_spender]).total == Decimal("50.00")


def test_an_applied_code_beats_automatic_cart_discounts() -> None:
    book = product("30.00")
    automatic = cart_discount(DiscountKind.percent, "20")
    code = cart_discount(DiscountKind.fixed, "1.00", code="ONE")
    priced = quote([(book, 1)], [automatic, code], code="ONE")
    assert priced.cart_discount is not None
    assert (priced.cart_discount.code, priced.total) == ("ONE", Decimal("29.00"))
    assert quote([(book, 1)], [automatic, code]).total == Decimal("24.00")


def test_an_invalid_code_is_shown_not_applied_with_its_reason() -> None:
    book = product("30.00")
    ended = cart_discount(
        DiscountKind.percent, "10", code="OLD", ends_at=NOW - timedelta(minutes=1)
    )
    priced = quote([(book, 1)], [ended], code="OLD")
    assert priced.cart_discount is not None
    assert (priced.cart_discount.applied, priced.cart_discount.reason) == (
        False,
        "discount_expired",
    )
    assert priced.total == Decimal("30.00")


def test_thirty_three_thirty_three_three_times_with_ten_percent_off() -> None:
    item = product("33.33")
    priced = quote([(item, 3)], [cart_discount(DiscountKind.percent, "10")])
    assert priced.subtotal == Decimal("99.99")
    assert priced.cart_discount is not None
    assert priced.cart_discount.amount == Decimal("10.00")
    assert priced.total == Decimal("89.99")


def test_ten_cents_and_twenty_cents_make_thirty() -> None:
    assert quote([(product("0.10"), 1), (product("0.20"), 1)], []).total == Decimal("0.30")


def test_allocation_adds_up_and_puts_the_remainder_last() -> None:
    shares = allocate(Decimal("10.00"), [Decimal("33.33")] * 3)
    assert shares == [Decimal("3.33"), Decimal("3.33"), Decimal("3.34")]
    assert allocate(Decimal("0.99"), [Decimal("0.33"), Decimal("0.33"), Decimal("0.34")]) == [
        Decimal("0.33"),
        Decimal("0.33"),
        Decimal("0.33"),
    ]


def test_allocation_never_gives_a_line_more_than_its_total() -> None:
    weights = [Decimal("0.50"), Decimal("0.50"), Decimal("0.01")]
    for cents in range(0, 102):
        amount = Decimal(cents) / 100
        shares = allocate(amount, weights)
        assert sum(shares) == amount
        assert all(Decimal(0) <= s <= w for s, w in zip(shares, weights, strict=True))
