from decimal import Decimal

from bson import Decimal128, ObjectId
from fastapi import FastAPI
from httpx import AsyncClient

from shop.audit import audit
from shop.catalog.models import Product
from tests.factories import Account, assert_problem, make_product, make_user, place_order


async def test_admin_creates_product_with_exact_price(client: AsyncClient, admin: Account) -> None:
    # Prices arrive as JSON strings or JSON numbers; neither may pick up a float error.
    for sent, expected in [
        ('"19.99"', "19.99"),
        ("0.1", "0.10"),
        ("33.33", "33.33"),
        ("5", "5.00"),
    ]:
        response = await client.post(
            "/products/",
            content=f'{{"name": "Mug", "price": {sent}, "stock": 3}}',
            headers={**admin.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["price"] == expected
        product_id = ObjectId(response.json()["id"])
        raw = await Product.get_pymongo_collection().find_one({"_id": product_id})
        assert raw is not None
        assert raw["price"] == Decimal128(expected)


async def test_product_input_is_validated(client: AsyncClient, admin: Account) -> None:
    for body in [
        {"name": "A", "price": "0", "stock": 1},
        {"name": "A", "price": "1.999", "stock": 1},
        {"name": "A", "price": "-1", "stock": 1},
        {"name": "A", "price": "1.00", "stock": -1},
        {"name": "A", "price": "1.00", "stock": "2"},
        {"name": "A", "price": "abc", "stock": 1},
        {"name": "", "price": "1.00", "stock": 1},
        {"name": "A", "price": "1.00", "stock": 1, "colour": "red"},
    ]:
        response = await client.post("/products/", json=body, headers=admin.headers)
        assert_problem(response, 422, "validation_error")
    assert await Product.count() == 0


async def test_customers_cannot_manage_the_catalog(client: AsyncClient, app: FastAPI) -> None:
    customer = await make_user(app)
    product = await make_product(price="5.00", stock=5)
    attempts = [
        client.post(
            "/products/", json={"name": "A", "price": "1", "stock": 1}, headers=customer.headers
        ),
        client.patch(f"/products/{product.id}", json={"price": "0.01"}, headers=customer.headers),
        client.delete(f"/products/{product.id}", headers=customer.headers),
    ]
    for attempt in attempts:
        assert_problem(await attempt, 403, "forbidden")
    fresh = await Product.get(product.id)
    assert fresh is not None
    assert fresh.price == Decimal("5.00")
    assert fresh.active


async def test_patch_changes_only_given_fields(client: AsyncClient, admin: Account) -> None:
    product = await make_product(price="5.00", stock=5, name="Old")
    response = await client.patch(
        f"/products/{product.id}", json={"price": "7.25"}, headers=admin.headers
    )
    assert response.status_code == 200
    fresh = await Product.get(product.id)
    assert fresh is not None
    assert (fresh.name, fresh.price, fresh.stock) == ("Old", Decimal("7.25"), 5)


async def test_deactivated_product_leaves_the_catalog(client: AsyncClient, admin: Account) -> None:
    kept = await make_product()
    gone = await make_product()
    assert (await client.delete(f"/products/{gone.id}", headers=admin.headers)).status_code == 200

    listed = (await client.get("/products/")).json()["items"]
    assert [p["id"] for p in listed] == [str(kept.id)]
    assert_problem(await client.get(f"/products/{gone.id}"), 404, "product_not_found")
    as_admin = await client.get(f"/products/{gone.id}", headers=admin.headers)
    assert as_admin.json()["active"] is False
    assert await Product.count() == 2


async def test_listing_pages_through_every_product_once(client: AsyncClient) -> None:
    made = {str((await make_product()).id) for _ in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/products/", params=params)).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    assert len(seen) == 7


async def pages(client: AsyncClient, limit: int, **headers: str) -> list[list[str]]:
    """Every page of the catalog, following the cursors."""
    found: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/products/", params=params, headers=headers)).json()
        found.append([p["id"] for p in page["items"]])
        if (cursor := page["next_cursor"]) is None:
            return found


def flat(pages: list[list[str]]) -> list[str]:
    return [item for page in pages for item in page]


async def test_withdrawn_products_leave_no_short_pages(client: AsyncClient, admin: Account) -> None:
    """Withdrawn products leave gaps in the positions; a page spans them and stays full."""
    made = [await make_product() for _ in range(30)]
    for product in made[3:20]:  # a long run of gaps, then a few
        await client.delete(f"/products/{product.id}", headers=admin.headers)
    await client.delete(f"/products/{made[25].id}", headers=admin.headers)
    active = [str(p.id) for i, p in enumerate(made) if not (3 <= i < 20 or i == 25)]
    customer_pages = await pages(client, 4)
    assert [len(page) for page in customer_pages] == [4, 4, 4]
    assert flat(customer_pages) == active  # in the order they were added, each once
    everything = flat(await pages(client, 7, Authorization=admin.headers["Authorization"]))
    assert everything == [str(p.id) for p in made]


async def test_products_stored_before_positions_get_theirs_in_creation_order(
    client: AsyncClient,
) -> None:
    older = [ObjectId() for _ in range(3)]
    await Product.get_pymongo_collection().insert_many(
        [
            {"_id": _id, "name": "Old", "price": Decimal128("1.00"), "stock": 1, "active": True}
            for _id in older
        ]
    )
    newer = await make_product()
    assert await Product.number_unplaced() == 3
    assert await Product.number_unplaced() == 0
    listed = flat(await pages(client, 2))
    assert listed == [str(newer.id), *map(str, older)]


async def test_unknown_and_malformed_ids(client: AsyncClient) -> None:
    assert_problem(await client.get("/products/64b7f0c2a1b2c3d4e5f60718"), 404, "product_not_found")
    assert (await client.get("/products/not-an-id")).status_code in (404, 422)
    assert_problem(await client.get("/products/?limit=0"), 422, "validation_error")
    assert_problem(await client.get("/products/?cursor=zzz"), 422, "invalid_cursor")


async def test_restocking_counts_what_was_received_and_the_books_stay_whole(
    client: AsyncClient, admin: Account, customer: Account
) -> None:
    product = await make_product(stock=10)
    await place_order(client, customer, (product, 3))  # 3 reserved, 7 left
    restocked = await client.patch(
        f"/products/{product.id}",
        json={"stock": 20, "name": "$set me literally"},
        headers=admin.headers,
    )
    assert (restocked.json()["stock"], restocked.json()["name"]) == (20, "$set me literally")
    stored = await Product.get(product.id)
    assert stored is not None
    assert stored.received == 10 + (20 - 7)
    assert await audit() == []
