"""A cart viewed again is answered with the bytes written last, until something it was
priced from changes: the cart, a cached product or discount, or a discount's start or end."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from shop.cart import answers
from shop.discounts.models import DiscountUsage
from shop.kit.clock import ShiftedClock
from tests.factories import (
    Account,
    add_to_cart,
    grow_first_line_elsewhere,
    make_discount,
    make_product,
    view_cart,
)


class Pricings:
    """Counts the quotes the cart's view prices."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = answers.quote_cart

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await real(*args, **kwargs)

        monkeypatch.setattr(answers, "quote_cart", counted)


@pytest.fixture
def pricings(monkeypatch: pytest.MonkeyPatch) -> Pricings:
    return Pricings(monkeypatch)


async def test_a_cart_viewed_again_is_not_priced_again(
    client: AsyncClient, customer: Account, pricings: Pricings
) -> None:
    product = await make_product(price="4.00", stock=9)
    added = await add_to_cart(client, customer, product, 2)
    assert added.status_code == 200

    first = await client.get("/cart/", headers=customer.headers)
    again = await client.get("/cart/", headers=customer.headers)
    assert pricings.count == 1
    # What FastAPI wrote for the add is what the view writes, byte for byte.
    assert first.content == again.content == added.content
    assert first.headers["content-type"] == "application/json"
    assert again.json()["total"] == "8.00"

    await add_to_cart(client, customer, product, 1)  # a new revision
    assert (await view_cart(client, customer))["total"] == "12.00"
    assert pricings.count == 2


async def test_a_cart_changed_by_another_process_shows_at_once(
    client: AsyncClient, customer: Account, elsewhere: Any, pricings: Pricings
) -> None:
    product = await make_product(price="4.00", stock=9)
    await add_to_cart(client, customer, product, 2)
    assert (await view_cart(client, customer))["total_quantity"] == 2
    await grow_first_line_elsewhere(elsewhere.carts, customer.id, 3)
    viewed = await view_cart(client, customer)
    assert (viewed["total_quantity"], viewed["total"]) == (5, "20.00")
    assert pricings.count == 2


async def test_a_product_this_process_changes_shows_at_once(
    client: AsyncClient, customer: Account, admin: Account, pricings: Pricings
) -> None:
    product = await make_product(price="4.00", stock=9)
    await add_to_cart(client, customer, product, 2)
    assert (await view_cart(client, customer))["total"] == "8.00"
    changed = await client.patch(
        f"/products/{product.id}", json={"price": "5.00"}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text
    assert (await view_cart(client, customer))["total"] == "10.00"
    assert pricings.count == 2


async def test_a_sale_that_ends_stops_showing_at_its_end(
    client: AsyncClient, customer: Account, clock: ShiftedClock, pricings: Pricings
) -> None:
    """Within the catalog cache's bound: the answer ends with the sale, not with the cache."""
    product = await make_product(price="10.00")
    ends = datetime.now(UTC) + timedelta(minutes=10)
    await make_discount(
        scope="product", kind="percent", value="50", product_ids=[product.id], ends_at=ends
    )
    await add_to_cart(client, customer, product, 1)
    assert (await view_cart(client, customer))["total"] == "5.00"
    assert (await view_cart(client, customer))["total"] == "5.00"
    assert pricings.count == 1

    clock.advance(601)
    assert (await view_cart(client, customer))["total"] == "10.00"
    assert pricings.count == 2


async def test_a_discount_limited_per_customer_is_judged_on_every_view(
    client: AsyncClient, customer: Account, pricings: Pricings
) -> None:
    """A customer's uses change without a new revision of the cart (an order of theirs
    cancelled gives one back): such a quote is not kept."""
    product = await make_product(price="10.00")
    discount = await make_discount(scope="cart", kind="fixed", value="2.00", per_user_limit=1)
    await add_to_cart(client, customer, product, 1)
    assert (await view_cart(client, customer))["total"] == "8.00"

    assert discount.id is not None
    await DiscountUsage(discount_id=discount.id, user_id=customer.id, used=1).insert()
    assert (await view_cart(client, customer))["total"] == "10.00"
    assert pricings.count == 2
