"""What a newcomer meets trying the API by hand: curl's defaults, the challenge a 401 carries,
the documents' promises, and the demo catalog's discounts."""

import json
import logging
from pathlib import Path

import pytest
from httpx import AsyncClient

from shop.demo import create_demo_catalog
from shop.discounts.models import Discount
from tests.factories import Account, assert_problem, make_product

ROOT = Path(__file__).resolve().parent.parent


async def test_json_sent_as_a_form_is_told_to_send_its_content_type(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product()
    body = json.dumps({"product_id": str(product.id), "quantity": 1})
    for content_type in ("application/x-www-form-urlencoded", None):  # curl -d, or none
        headers = {**customer.headers, **({"Content-Type": content_type} if content_type else {})}
        sent = await client.post("/cart/add/", content=body, headers=headers)
        problem = assert_problem(sent, 415, "json_expected")
        assert "Content-Type: application/json" in str(problem["detail"])
    registered = await client.post(
        "/auth/register",
        content=json.dumps({"email": "ann@example.com", "password": "correct horse"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(registered, 415, "json_expected")
    # A JSON body that is not an object is still a 422 of its own.
    wrong = await client.post("/cart/add/", json=[1, 2], headers=customer.headers)
    assert_problem(wrong, 422, "validation_error")


async def test_a_401_says_how_to_authenticate(client: AsyncClient) -> None:
    missing = await client.get("/order/history/")
    assert_problem(missing, 401, "not_authenticated")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    refused = await client.get("/order/history/", headers={"Authorization": "Bearer garbage"})
    assert_problem(refused, 401, "invalid_token")
    assert refused.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


async def test_operations_without_input_promise_no_422(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/health", "/ready", "/metrics"):
        assert "422" not in paths[path]["get"]["responses"], path
    assert "422" in paths["/cart/add/"]["post"]["responses"]
    assert "415" in paths["/cart/add/"]["post"]["responses"]


async def test_the_demo_catalog_prices_with_the_discounts_its_examples_show(
    client: AsyncClient, customer: Account
) -> None:
    assert await create_demo_catalog() == 6
    assert await create_demo_catalog() == 0  # once only
    assert await Discount.count() == 3
    products = {p["name"]: p for p in (await client.get("/products/")).json()["items"]}
    socks, bottle = products["Wool socks"], products["Steel bottle"]
    for product, quantity in ((socks, 1), (bottle, 2)):
        added = await client.post(
            "/cart/add/",
            json={"product_id": product["id"], "quantity": quantity},
            headers=customer.headers,
        )
        assert added.status_code == 200, added.text
    cart = added.json()
    [sock_line] = [line for line in cart["items"] if line["product_id"] == socks["id"]]
    assert sock_line["discount"] == "2.80"  # 20% off 14.00
    assert cart["subtotal"] == "69.20"  # 11.20 + 2 x 29.00
    assert cart["cart_discount"]["code"] is None  # 5.00 off from 60.00, by itself
    assert cart["total"] == "64.20"
    coded = await client.post(
        "/cart/discount/", json={"code": "welcome10"}, headers=customer.headers
    )
    assert coded.status_code == 200, coded.text
    assert (coded.json()["cart_discount"]["code"], coded.json()["total"]) == ("WELCOME10", "62.28")


async def test_the_docs_static_files_are_counted_under_their_route(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="shop.http"):
        assert (await client.get("/docs/static/swagger-ui.css")).status_code == 200
    [line] = [r for r in caplog.records if r.name == "shop.http"]
    assert line.fields["route"] == "/docs/static/{path}"  # type: ignore[attr-defined]
    metrics = (await client.get("/metrics")).text
    assert 'route="/docs/static/{path}"' in metrics


def test_the_readme_says_how_to_stop_what_make_run_started() -> None:
    readme = (ROOT / "README.md").read_text()
    stopping = readme[readme.index("### Stopping the service") :]
    stopping = stopping[: stopping.index("\n## ")]
    assert "kill %1" in stopping or "kill $!" in stopping
    assert "already running" in stopping  # what a second `make run` says
    makefile = (ROOT / "Makefile").read_text()
    fast = next(line for line in makefile.splitlines() if line.startswith("test-fast:"))
    assert "about a minute" in fast and "about a minute" in readme
    assert "about 30 s" not in readme and "under a minute" not in makefile
