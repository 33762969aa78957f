import asyncio

from fastapi import FastAPI
from httpx import AsyncClient

from shop.cart.models import Cart
from shop.kit.config import AppSettings
from tests.factories import Account, add_to_cart, assert_problem, make_product, make_user


async def quantities(account_id: object) -> dict[str, int]:
    cart = await Cart.find_one({"user_id": account_id})
    return {} if cart is None else {str(i.product_id): i.quantity for i in cart.items}


async def test_empty_cart_is_200_with_no_items(client: AsyncClient, customer: Account) -> None:
    response = await client.get("/cart/", headers=customer.headers)
    assert response.status_code == 200
    assert response.json() == {
        "items": [],
        "total_quantity": 0,
        "subtotal": "0.00",
        "cart_discount": None,
        "total": "0.00",
        "currency": "EUR",
    }


async def test_adding_twice_increases_the_quantity(client: AsyncClient, customer: Account) -> None:
    mug = await make_product(price="12.50", stock=10)
    tee = await make_product(price="0.10", stock=10)
    await add_to_cart(client, customer, mug, 2)
    await add_to_cart(client, customer, tee, 1)
    response = await add_to_cart(client, customer, mug, 3)
    assert response.status_code == 200
    body = response.json()
    assert [(i["product_id"], i["quantity"], i["line_total"]) for i in body["items"]] == [
        (str(mug.id), 5, "62.50"),
        (str(tee.id), 1, "0.10"),
    ]
    assert (body["total_quantity"], body["subtotal"], body["total"]) == (6, "62.60", "62.60")
    assert (await client.get("/cart/", headers=customer.headers)).json() == body


async def test_amounts_are_answered_with_two_places_however_they_were_stored(
    client: AsyncClient, customer: Account
) -> None:
    """Answers do not check their amounts again, but still write each with two places: a
    price stored as 5 (an import straight into the database, say) is answered as 5.00."""
    product = await make_product(price="5", stock=10)
    shown = await client.get(f"/products/{product.id}")
    assert shown.json()["price"] == "5.00"
    added = await add_to_cart(client, customer, product, 2)
    assert added.status_code == 200, added.text
    body = added.json()
    (line,) = body["items"]
    assert (line["unit_price"], line["line_subtotal"], line["line_total"]) == (
        "5.00",
        "10.00",
        "10.00",
    )
    assert (body["subtotal"], body["total"]) == ("10.00", "10.00")


async def test_twenty_concurrent_adds_all_count(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    other = await make_user(app)
    product = await make_product(stock=100)
    await add_to_cart(client, other, product, 4)
    responses = await asyncio.gather(*(add_to_cart(client, customer, product) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert await quantities(customer.id) == {str(product.id): 20}
    assert await quantities(other.id) == {str(product.id): 4}


async def test_concurrent_adds_stop_exactly_at_stock(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product(stock=7)
    responses = await asyncio.gather(*(add_to_cart(client, customer, product) for _ in range(15)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 7 + [409] * 8
    assert await quantities(customer.id) == {str(product.id): 7}


async def test_adding_above_stock_is_refused(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=3)
    await add_to_cart(client, customer, product, 2)
    assert_problem(await add_to_cart(client, customer, product, 2), 409, "insufficient_stock")
    assert_problem(await add_to_cart(client, customer, product, 4), 409, "insufficient_stock")
    assert await quantities(customer.id) == {str(product.id): 2}


async def test_unknown_or_inactive_product_is_404(client: AsyncClient, customer: Account) -> None:
    inactive = await make_product(active=False)
    unknown = {"product_id": "64b7f0c2a1b2c3d4e5f60718", "quantity": 1}
    assert_problem(await add_to_cart(client, customer, inactive), 404, "product_not_found")
    assert_problem(
        await client.post("/cart/add/", json=unknown, headers=customer.headers),
        404,
        "product_not_found",
    )
    assert await quantities(customer.id) == {}


async def test_quantity_must_be_a_positive_integer(client: AsyncClient, customer: Account) -> None:
    product = await make_product()
    for quantity in [0, -1, 1.5, "2", None, 10**9]:
        response = await client.post(
            "/cart/add/",
            json={"product_id": str(product.id), "quantity": quantity},
            headers=customer.headers,
        )
        assert_problem(response, 422, "validation_error")
    for body in [{"product_id": "nope", "quantity": 1}, {"quantity": 1}, []]:
        response = await client.post("/cart/add/", json=body, headers=customer.headers)
        assert_problem(response, 422, "validation_error")
    assert await quantities(customer.id) == {}


async def test_remove_decreases_or_drops_the_line(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=10)
    await add_to_cart(client, customer, product, 5)
    params = {"product_id": str(product.id), "quantity": 2}
    response = await client.delete("/cart/remove/", params=params, headers=customer.headers)
    assert response.status_code == 200
    assert response.json()["items"][0]["quantity"] == 3
    assert await quantities(customer.id) == {str(product.id): 3}

    params["quantity"] = 3
    await client.delete("/cart/remove/", params=params, headers=customer.headers)
    assert await quantities(customer.id) == {}

    await add_to_cart(client, customer, product, 4)
    response = await client.delete(
        "/cart/remove/", params={"product_id": str(product.id)}, headers=customer.headers
    )
    assert response.json()["items"] == []
    assert await quantities(customer.id) == {}


async def test_removing_what_is_not_there_is_404(client: AsyncClient, customer: Account) -> None:
    product = await make_product()
    params = {"product_id": str(product.id)}
    response = await client.delete("/cart/remove/", params=params, headers=customer.headers)
    assert_problem(response, 404, "cart_item_not_found")
    bad = await client.delete(
        "/cart/remove/", params={**params, "quantity": 0}, headers=customer.headers
    )
    assert_problem(bad, 422, "validation_error")


async def test_a_deactivated_product_stays_in_the_cart_flagged(
    client: AsyncClient, customer: Account, admin: Account
) -> None:
    kept = await make_product(price="2.00")
    withdrawn = await make_product(price="3.00")
    await add_to_cart(client, customer, kept, 1)
    await add_to_cart(client, customer, withdrawn, 1)
    await client.delete(f"/products/{withdrawn.id}", headers=admin.headers)

    body = (await client.get("/cart/", headers=customer.headers)).json()
    flags = {i["product_id"]: i["available"] for i in body["items"]}
    assert flags == {str(kept.id): True, str(withdrawn.id): False}
    await client.patch(f"/products/{kept.id}", json={"stock": 0}, headers=admin.headers)
    body = (await client.get("/cart/", headers=customer.headers)).json()
    assert [i["in_stock"] for i in body["items"]] == [False, True]
    assert (body["subtotal"], body["total"], body["total_quantity"]) == ("2.00", "2.00", 1)


async def test_carts_are_private(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product()
    await add_to_cart(client, ann, product, 2)
    assert (await client.get("/cart/", headers=bob.headers)).json()["items"] == []
    response = await client.delete(
        "/cart/remove/", params={"product_id": str(product.id)}, headers=bob.headers
    )
    assert_problem(response, 404, "cart_item_not_found")
    assert await quantities(ann.id) == {str(product.id): 2}


async def test_adds_racing_removes_of_one_product_never_fail(
    client: AsyncClient, customer: Account
) -> None:
    """100 adds against 100 removes of the same line: every add lands (200) or the cart was
    changing too fast (409 cart_busy); every remove lands or finds no line (404). Never 500,
    and the line ends up holding what was added minus what was removed."""
    product = await make_product(stock=1_000)

    async def remove() -> int:
        url = f"/cart/remove/?product_id={product.id}&quantity=1"
        return (await client.delete(url, headers=customer.headers)).status_code

    async def add() -> int:
        return (await add_to_cart(client, customer, product, 1)).status_code

    statuses = await asyncio.gather(*(f() for _ in range(100) for f in (add, remove)))
    adds, removes = statuses[0::2], statuses[1::2]
    assert set(adds) <= {200, 409}, adds
    assert set(removes) <= {200, 404}, removes
    cart = await Cart.of_user(customer.id)
    assert cart.quantity_of(product.id) == adds.count(200) - removes.count(200)


async def test_a_cart_holds_a_bounded_number_of_lines_and_units(
    client: AsyncClient, settings: AppSettings, customer: Account
) -> None:
    settings.cart_max_lines, settings.cart_max_line_quantity = 3, 5
    products = [await make_product(stock=100) for _ in range(4)]
    for product in products[:3]:
        assert (await add_to_cart(client, customer, product, 1)).status_code == 200
    assert_problem(await add_to_cart(client, customer, products[3], 1), 422, "cart_full")
    assert (await add_to_cart(client, customer, products[0], 4)).status_code == 200  # 5 units
    over = await add_to_cart(client, customer, products[0], 1)
    assert_problem(over, 422, "line_quantity_exceeded")
    assert_problem(
        await add_to_cart(client, customer, products[1], 6), 422, "line_quantity_exceeded"
    )
    cart = await Cart.of_user(customer.id)
    assert [cart.quantity_of(p.id) for p in products] == [5, 1, 1, 0]


async def test_concurrent_new_lines_stop_exactly_at_the_line_limit(
    client: AsyncClient, settings: AppSettings, customer: Account
) -> None:
    settings.cart_max_lines = 5
    products = [await make_product(stock=10) for _ in range(12)]
    answers = await asyncio.gather(*(add_to_cart(client, customer, p, 1) for p in products))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [422] * 7
    assert len((await Cart.of_user(customer.id)).items) == 5
