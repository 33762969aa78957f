import asyncio
from datetime import timedelta
from decimal import Decimal

from fastapi import FastAPI
from httpx import AsyncClient

from shop.accounts.models import Role
from shop.cart.models import Cart
from shop.discounts.models import Discount, DiscountKind, DiscountScope, DiscountUsage
from shop.kit.clock import ShiftedClock, utcnow
from shop.kit.config import AppSettings
from shop.orders.models import Order
from tests.factories import (
    Account,
    add_to_cart,
    apply_code,
    assert_problem,
    make_discount,
    make_product,
    make_user,
    pay,
    view_cart,
)

CART, PRODUCT = DiscountScope.cart, DiscountScope.product
PERCENT, FIXED = DiscountKind.percent, DiscountKind.fixed


async def test_admins_manage_discounts(client: AsyncClient, app: FastAPI, admin: Account) -> None:
    customer = await make_user(app)
    body = {
        "name": "Welcome",
        "scope": "cart",
        "kind": "percent",
        "value": "10",
        "code": "welcome10",
    }
    created = await client.post("/discounts/", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    discount = created.json()
    assert (discount["code"], discount["value"], discount["times_used"]) == (
        "WELCOME10",
        "10.00",
        0,
    )

    assert_problem(
        await client.post("/discounts/", json=body, headers=admin.headers),
        409,
        "discount_code_taken",
    )
    assert_problem(
        await client.post("/discounts/", json=body, headers=customer.headers), 403, "forbidden"
    )
    assert_problem(await client.get("/discounts/", headers=customer.headers), 403, "forbidden")

    url = f"/discounts/{discount['id']}"
    updated = await client.patch(url, json={"value": "15", "usage_limit": 3}, headers=admin.headers)
    assert (updated.json()["value"], updated.json()["usage_limit"]) == ("15.00", 3)
    listed = await client.get("/discounts/", headers=admin.headers)
    assert [d["id"] for d in listed.json()["items"]] == [discount["id"]]
    removed = await client.delete(url, headers=admin.headers)
    assert removed.json()["active"] is False
    assert (await client.get(url, headers=admin.headers)).json()["active"] is False
    assert_problem(
        await client.get("/discounts/64b7f0c2a1b2c3d4e5f60718", headers=admin.headers),
        404,
        "discount_not_found",
    )


async def test_discount_definitions_are_validated(client: AsyncClient, admin: Account) -> None:
    product = await make_product()
    now = utcnow()
    base = {"name": "D", "scope": "cart", "kind": "percent", "value": "10"}
    for invalid in [
        {**base, "value": "100.01"},
        {**base, "value": "0"},
        {**base, "kind": "fixed", "value": "-1"},
        {**base, "scope": "product"},
        {**base, "product_ids": [str(product.id)]},
        {**base, "scope": "product", "product_ids": [str(product.id)], "code": "ABC"},
        {**base, "starts_at": now.isoformat(), "ends_at": (now - timedelta(days=1)).isoformat()},
        {**base, "starts_at": "2026-01-01T00:00:00"},  # no time zone
        {**base, "usage_limit": 0},
        {**base, "code": "no spaces"},
        {**base, "colour": "red"},
    ]:
        response = await client.post("/discounts/", json=invalid, headers=admin.headers)
        assert_problem(response, 422, "validation_error")
    created = await client.post("/discounts/", json=base, headers=admin.headers)
    bad_update = await client.patch(
        f"/discounts/{created.json()['id']}", json={"value": "150"}, headers=admin.headers
    )
    assert_problem(bad_update, 422, "validation_error")
    assert await Discount.count() == 1
    stored = await Discount.find_one()
    assert stored is not None
    assert stored.value == Decimal("10.00")


async def test_two_changes_valid_alone_never_combine_into_an_invalid_discount(
    client: AsyncClient, app: FastAPI
) -> None:
    """One admin moves the start later while another moves the end earlier: each is valid
    against what its author read, together they are not. Exactly one lands each time."""
    admin = await make_user(app, Role.admin)
    now = utcnow()
    for _ in range(10):
        created = await client.post(
            "/discounts/",
            json={"name": "D", "scope": "cart", "kind": "percent", "value": "10"},
            headers=admin.headers,
        )
        url = f"/discounts/{created.json()['id']}"
        starts = {"starts_at": (now + timedelta(days=10)).isoformat()}
        ends = {"ends_at": (now + timedelta(days=5)).isoformat()}
        answers = await asyncio.gather(
            client.patch(url, json=starts, headers=admin.headers),
            client.patch(url, json=ends, headers=admin.headers),
        )
        assert sorted(a.status_code for a in answers)[0] == 200
        assert {a.status_code for a in answers} <= {200, 409, 422}, [a.text for a in answers]
        stored = await Discount.get(created.json()["id"])
        assert stored is not None
        assert stored.starts_at is None or stored.ends_at is None, "both changes landed"


async def test_cart_shows_product_and_cart_discounts(
    client: AsyncClient, customer: Account
) -> None:
    shirt = await make_product(price="20.00")
    mug = await make_product(price="8.00")
    await make_discount(scope=PRODUCT, kind=PERCENT, value="25", product_ids=[shirt.id])
    await make_discount(scope=CART, kind=FIXED, value="2.00", code="TWO")
    await add_to_cart(client, customer, shirt, 2)
    await add_to_cart(client, customer, mug, 1)
    applied = await apply_code(client, customer, " two ")
    assert applied.status_code == 200, applied.text
    cart = applied.json()
    assert [(i["line_subtotal"], i["discount"], i["line_total"]) for i in cart["items"]] == [
        ("40.00", "10.00", "30.00"),
        ("8.00", "0.00", "8.00"),
    ]
    assert cart["subtotal"] == "38.00"
    assert cart["cart_discount"] == {
        "code": "TWO",
        "amount": "2.00",
        "applied": True,
        "reason": None,
    }
    assert cart["total"] == "36.00"
    assert await view_cart(client, customer) == cart

    removed = await client.delete("/cart/discount/", headers=customer.headers)
    assert (removed.json()["cart_discount"], removed.json()["total"]) == (None, "38.00")


async def test_codes_that_cannot_be_used_now_answer_as_unknown_ones_unless_actionable(
    client: AsyncClient, app: FastAPI
) -> None:
    """Guessing must not tell hidden codes from unknown ones: only reasons the customer can
    act on (the minimum subtotal, their own limit) are told apart."""
    account = await make_user(app)
    await add_to_cart(client, account, await make_product(price="10.00"), 1)
    now = utcnow()
    await make_discount(scope=CART, kind=PERCENT, value="5", code="OFF", active=False)
    await make_discount(
        scope=CART, kind=PERCENT, value="5", code="SOON", starts_at=now + timedelta(days=1)
    )
    await make_discount(
        scope=CART, kind=PERCENT, value="5", code="GONE", ends_at=now - timedelta(days=1)
    )
    await make_discount(
        scope=CART, kind=PERCENT, value="5", code="USED", usage_limit=2, times_used=2
    )
    await make_discount(scope=CART, kind=PERCENT, value="5", code="BIG", min_subtotal="50.00")
    answers = {}
    for code in ("NOPE", "OFF", "SOON", "GONE", "USED"):
        body = assert_problem(await apply_code(client, account, code), 404, "discount_not_found")
        answers[code] = (body["title"], str(body["detail"]).replace(code, "X"))
    assert len(set(answers.values())) == 1, answers  # the same answer, whatever the reason
    assert_problem(await apply_code(client, account, "BIG"), 409, "discount_min_subtotal_not_met")
    cart = await Cart.find_one({"user_id": account.id})
    assert cart is not None
    assert cart.discount_code is None


async def test_a_customer_who_keeps_guessing_codes_is_refused_for_a_while(
    client: AsyncClient, app: FastAPI, settings: AppSettings, customer: Account
) -> None:
    await add_to_cart(client, customer, await make_product(price="10.00"), 1)
    await make_discount(scope=CART, kind=PERCENT, value="5", code="REAL")
    for n in range(settings.promo_code_failures_limit):
        assert_problem(await apply_code(client, customer, f"GUESS{n}"), 404, "discount_not_found")
    refused = await apply_code(client, customer, "REAL")
    assert_problem(refused, 429, "too_many_requests")
    assert int(refused.headers["retry-after"]) >= 1
    other = await make_user(app)  # others are not affected
    await add_to_cart(client, other, await make_product(price="10.00"), 1)
    assert (await apply_code(client, other, "REAL")).status_code == 200


async def test_one_code_per_cart_the_new_one_replaces_the_old(
    client: AsyncClient, customer: Account
) -> None:
    await add_to_cart(client, customer, await make_product(price="10.00"), 1)
    await make_discount(scope=CART, kind=FIXED, value="1.00", code="ONE")
    await make_discount(scope=CART, kind=FIXED, value="3.00", code="THREE")
    await apply_code(client, customer, "ONE")
    cart = (await apply_code(client, customer, "THREE")).json()
    assert (cart["cart_discount"]["code"], cart["total"]) == ("THREE", "7.00")


async def test_a_code_that_stops_being_valid_shows_as_not_applied(
    client: AsyncClient, customer: Account, admin: Account
) -> None:
    await add_to_cart(client, customer, await make_product(price="10.00"), 1)
    code = await make_discount(scope=CART, kind=FIXED, value="1.00", code="ONE")
    await apply_code(client, customer, "ONE")
    await client.delete(f"/discounts/{code.id}", headers=admin.headers)
    cart = await view_cart(client, customer)
    assert cart["cart_discount"] == {
        "code": "ONE",
        "amount": "0.00",
        "applied": False,
        "reason": "discount_inactive",
    }
    assert cart["total"] == "10.00"
    refused = await client.post("/order/create/", headers=customer.headers)
    assert_problem(refused, 409, "discount_inactive")
    assert await Order.count() == 0
    await client.delete("/cart/discount/", headers=customer.headers)
    order = (await client.post("/order/create/", headers=customer.headers)).json()
    assert (order["total"], order["cart_discount"]) == ("10.00", None)


async def test_per_user_limit(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product(price="10.00", stock=10)
    await make_discount(scope=CART, kind=FIXED, value="1.00", code="ONCE", per_user_limit=1)
    await add_to_cart(client, ann, product, 1)
    await apply_code(client, ann, "ONCE")
    first = (await client.post("/order/create/", headers=ann.headers)).json()
    assert first["cart_discount"]["code"] == "ONCE"

    await add_to_cart(client, ann, product, 1)
    assert_problem(await apply_code(client, ann, "ONCE"), 409, "discount_per_user_limit_reached")
    await add_to_cart(client, bob, product, 1)
    assert (await apply_code(client, bob, "ONCE")).status_code == 200


async def test_fifty_checkouts_race_for_a_single_use_code(
    client: AsyncClient, app: FastAPI
) -> None:
    product = await make_product(price="10.00", stock=100)
    code = await make_discount(scope=CART, kind=PERCENT, value="50", code="HALF", usage_limit=1)
    customers = [await make_user(app) for _ in range(50)]
    for customer in customers:
        await add_to_cart(client, customer, product, 1)
        assert (await apply_code(client, customer, "HALF")).status_code == 200

    responses = await asyncio.gather(
        *(client.post("/order/create/", headers=c.headers) for c in customers)
    )
    created = [r.json() for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == 1
    assert created[0]["cart_discount"]["code"] == "HALF"
    assert created[0]["total"] == "5.00"
    assert all(r.json()["code"] == "discount_used_up" for r in refused)
    assert await Order.count() == 1
    fresh = await Discount.get(code.id)
    assert fresh is not None
    assert fresh.times_used == 1
    # The others keep their carts, now priced without the code.
    winner = await Order.find_one()
    assert winner is not None
    loser = next(c for c in customers if c.id != winner.user_id)
    cart = await view_cart(client, loser)
    assert (cart["total_quantity"], cart["total"], cart["cart_discount"]["reason"]) == (
        1,
        "10.00",
        "discount_used_up",
    )


async def test_awkward_totals_are_exact_and_the_order_matches_the_cart(
    client: AsyncClient, customer: Account
) -> None:
    await make_discount(scope=CART, kind=PERCENT, value="10")
    await add_to_cart(client, customer, await make_product(price="33.33"), 3)
    await add_to_cart(client, customer, await make_product(price="0.10"), 1)
    await add_to_cart(client, customer, await make_product(price="0.20"), 1)
    cart = await view_cart(client, customer)
    assert (cart["subtotal"], cart["cart_discount"]["amount"], cart["total"]) == (
        "100.29",
        "10.03",
        "90.26",
    )
    order = (await client.post("/order/create/", headers=customer.headers)).json()
    assert (order["subtotal"], order["cart_discount"]["amount"], order["total"]) == (
        cart["subtotal"],
        cart["cart_discount"]["amount"],
        cart["total"],
    )
    assert [ln["line_total"] for ln in order["lines"]] == [i["line_total"] for i in cart["items"]]
    nets = [Decimal(ln["net_total"]) for ln in order["lines"]]
    shares = [Decimal(ln["cart_discount_share"]) for ln in order["lines"]]
    assert sum(nets) == Decimal(order["total"])
    assert sum(shares) == Decimal("10.03")
    assert [str(s) for s in shares] == ["10.00", "0.01", "0.02"]


async def test_changing_a_discount_after_checkout_leaves_the_order_alone(
    client: AsyncClient, customer: Account, admin: Account
) -> None:
    shirt = await make_product(price="20.00")
    sale = await make_discount(scope=PRODUCT, kind=PERCENT, value="10", product_ids=[shirt.id])
    code = await make_discount(scope=CART, kind=FIXED, value="5.00", code="FIVE")
    await add_to_cart(client, customer, shirt, 1)
    await apply_code(client, customer, "FIVE")
    placed = (await client.post("/order/create/", headers=customer.headers)).json()
    assert (placed["lines"][0]["discount"], placed["total"]) == ("2.00", "13.00")

    await client.patch(f"/discounts/{sale.id}", json={"value": "90"}, headers=admin.headers)
    await client.delete(f"/discounts/{code.id}", headers=admin.headers)
    await Discount.get_pymongo_collection().delete_many({})
    again = (await client.get(f"/order/{placed['id']}/", headers=customer.headers)).json()
    assert again["lines"] == placed["lines"]
    assert (again["total"], again["cart_discount"]) == ("13.00", placed["cart_discount"])
    assert (await pay(client, customer, placed["id"])).json()["payment"]["amount"] == "13.00"


async def test_a_cancelled_order_gives_its_code_back(
    client: AsyncClient, app: FastAPI, settings: AppSettings, clock: ShiftedClock
) -> None:
    settings.payment_timeout_seconds = 1
    account = await make_user(app)
    code = await make_discount(
        scope=CART, kind=FIXED, value="1.00", code="ONCE", usage_limit=1, per_user_limit=1
    )
    await add_to_cart(client, account, await make_product(price="10.00"), 1)
    await apply_code(client, account, "ONCE")
    order = (await client.post("/order/create/", headers=account.headers)).json()
    assert await times_used(code) == 1
    clock.advance(1.1)
    read = await client.get(f"/order/{order['id']}/", headers=account.headers)
    assert read.json()["status"] == "cancelled"
    assert await times_used(code) == 0
    usage = await DiscountUsage.find_one({"user_id": account.id})
    assert usage is not None
    assert usage.used == 0
    # Usable again, by the same customer.
    await add_to_cart(client, account, await make_product(price="10.00"), 1)
    assert (await apply_code(client, account, "ONCE")).json()["total"] == "9.00"
    assert (await client.post("/order/create/", headers=account.headers)).status_code == 201


async def times_used(discount: Discount) -> int:
    fresh = await Discount.get(discount.id)
    assert fresh is not None
    return fresh.times_used
