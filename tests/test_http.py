"""What every HTTP answer gets: both spellings of a path without redirects, safe headers, a
bounded body, and CORS only where configured."""

from collections.abc import AsyncIterator

from httpx import ASGITransport, AsyncClient

from shop.cart.models import Cart
from shop.kit.config import AppSettings
from shop.main import create_app
from tests.factories import Account, assert_problem, make_product, pay, place_order


async def test_the_other_spelling_is_served_not_redirected_to_the_host_header(
    client: AsyncClient, customer: Account
) -> None:
    product = await make_product()
    added = await client.post(
        "/cart/add",  # documented as /cart/add/
        json={"product_id": str(product.id), "quantity": 1},
        headers={**customer.headers, "Host": "evil.example"},
    )
    assert added.status_code == 200, added.text
    assert "location" not in added.headers
    assert (await Cart.of_user(customer.id)).quantity_of(product.id) == 1
    me = await client.get("/auth/me/", headers=customer.headers)  # documented as /auth/me
    assert me.status_code == 200 and me.json()["id"] == str(customer.id)
    assert (await client.get(f"/products/{product.id}/")).status_code == 200
    assert_problem(await client.get("/no/such/path/"), 404, "not_found")
    assert_problem(await client.get("/cart/add"), 405, "method_not_allowed")


async def test_every_answer_says_nosniff_and_private_ones_are_not_stored(
    client: AsyncClient, customer: Account
) -> None:
    public = await client.get("/products/")
    assert public.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in public.headers.get("cache-control", "")
    token = await client.post("/auth/token", data={"username": "nobody@x.io", "password": "x"})
    assert token.headers["cache-control"] == "no-store"
    order = await place_order(client, customer, (await make_product(), 1))
    paid = await pay(client, customer, order["id"])
    assert paid.status_code == 200
    assert paid.headers["cache-control"] == "no-store"
    assert paid.headers["x-content-type-options"] == "nosniff"


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    client: AsyncClient, settings: AppSettings
) -> None:
    limit = settings.max_body_bytes
    huge = b'{"email": "a@example.com", "password": "' + b"x" * (limit + 1) + b'"}'
    refused = await client.post(
        "/auth/register", content=huge, headers={"Content-Type": "application/json"}
    )
    assert_problem(refused, 413, "content_too_large")

    sent = 0

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: cut off as it streams
        nonlocal sent
        yield b'{"email": "a@example.com", "password": "'
        for _ in range(64):
            sent += 64 * 1024
            yield b"x" * 64 * 1024

    streamed = await client.post(
        "/auth/register", content=stream(), headers={"Content-Type": "application/json"}
    )
    assert_problem(streamed, 413, "content_too_large")
    assert sent <= limit + 64 * 1024  # read no further than the chunk that crossed the limit


async def test_cors_is_off_unless_origins_are_configured(
    client: AsyncClient, base_settings: AppSettings
) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    closed = await client.options("/cart/add/", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers

    allowed = create_app(
        base_settings.model_copy(update={"cors_origins": ["https://shop.example"]})
    )
    transport = ASGITransport(app=allowed)
    async with AsyncClient(transport=transport, base_url="http://shop.test") as browser:
        opened = await browser.options("/cart/add/", headers=preflight)
        assert opened.headers["access-control-allow-origin"] == "https://shop.example"
        other = await browser.options("/cart/add/", headers={**preflight, "Origin": "https://x.io"})
        assert "access-control-allow-origin" not in other.headers
