import base64

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.factories import Account, assert_problem, make_product, make_user, pay, place_order


async def test_history_lists_only_my_orders_newest_first(client: AsyncClient, app: FastAPI) -> None:
    ann = await make_user(app)
    bob = await make_user(app)
    product = await make_product(stock=50)
    placed = [await place_order(client, ann, (product, n)) for n in (1, 2, 3)]
    await place_order(client, bob, (product, 1))
    await pay(client, ann, placed[1]["id"])

    history = (await client.get("/order/history/", headers=ann.headers)).json()
    assert [(o["id"], o["status"], o["item_count"]) for o in history["items"]] == [
        (placed[2]["id"], "pending_payment", 3),
        (placed[1]["id"], "paid", 2),
        (placed[0]["id"], "pending_payment", 1),
    ]
    assert history["next_cursor"] is None
    assert {"total", "subtotal", "currency", "created_at"} <= history["items"][0].keys()


async def test_history_pages_and_filters(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=50)
    placed = [await place_order(client, customer, (product, 1)) for _ in range(5)]
    for order in placed[:2]:
        await pay(client, customer, order["id"])

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/order/history/", params=params, headers=customer.headers)).json()
        seen += [o["id"] for o in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [o["id"] for o in reversed(placed)]

    paid = await client.get("/order/history/", params={"status": "paid"}, headers=customer.headers)
    assert [o["id"] for o in paid.json()["items"]] == [placed[1]["id"], placed[0]["id"]]


async def test_history_rejects_bad_parameters(client: AsyncClient, customer: Account) -> None:
    for params in [{"limit": 0}, {"limit": 101}, {"status": "lost"}]:
        response = await client.get("/order/history/", params=params, headers=customer.headers)
        assert_problem(response, 422, "validation_error")
    bad_cursor = await client.get(
        "/order/history/", params={"cursor": "@@@"}, headers=customer.headers
    )
    assert_problem(bad_cursor, 422, "invalid_cursor")
    assert_problem(await client.get("/order/history/"), 401, "not_authenticated")


@pytest.mark.parametrize(
    "raw",
    [
        b"123:abc",  # not an id
        b"999999999999999999999999:64b7f0c2a1b2c3d4e5f60718",  # a time past any calendar
        b"-99999999999999999999:64b7f0c2a1b2c3d4e5f60718",
        b"12:34:56",
        b"\xff\xfe",
    ],
)
async def test_crafted_cursors_are_refused_not_failed(
    client: AsyncClient, raw: bytes, customer: Account
) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode()
    for given in (cursor, "not base64 at all!", "===="):
        response = await client.get(
            "/order/history/", params={"cursor": given}, headers=customer.headers
        )
        assert_problem(response, 422, "invalid_cursor")
