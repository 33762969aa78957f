"""Sign-in that no shared address, attacker or proxy can turn into a lockout.

Real sockets and real client addresses: the app is served by uvicorn on loopback, and each
client binds its own address in 127.0.0.0/8 (all of it is loopback on Linux). A proxy is a
client at a trusted address that sends ``X-Forwarded-For``.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_network

import httpx
import pytest
from fastapi import FastAPI

from shop.accounts.throttle import Attempts, Throttles
from shop.cart.models import Cart
from shop.kit.config import AppSettings
from shop.orders.models import Order
from tests.factories import PASSWORD, add_to_cart, make_product, make_user

pytestmark = pytest.mark.slow

PROXY = "127.0.0.250"


@pytest.fixture
def throttled(app: FastAPI, settings: AppSettings) -> Iterator[AppSettings]:
    """This test's throttles, made from its settings, with the proxy trusted."""
    settings.trusted_proxies = [ip_network(PROXY)]
    real = app.state.throttles
    app.state.throttles = Throttles.from_settings(settings)
    yield settings
    app.state.throttles = real


def allow_address_failures(app: FastAPI, settings: AppSettings, failures: int) -> None:
    """A smaller allowance of failures per address, for this test's throttles."""
    settings.login_address_failures_limit = failures
    app.state.throttles = Throttles.from_settings(settings)


@contextlib.asynccontextmanager
async def from_address(base: str, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, base_url=base, timeout=30) as client:
        yield client


async def log_in(
    client: httpx.AsyncClient, email: str, password: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await client.post(
        "/auth/token", data={"username": email, "password": password}, headers=headers
    )


async def log_in_honestly(client: httpx.AsyncClient, email: str) -> httpx.Response:
    """As a real client does: on 429 or 503, wait as Retry-After says (up to 20 tries)."""
    for _ in range(20):
        answer = await log_in(client, email, PASSWORD)
        if answer.status_code not in (429, 503):
            return answer
        await asyncio.sleep(min(float(answer.headers.get("retry-after", "1")), 2.0))
    return answer


async def test_twenty_customers_behind_one_address_all_get_in(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    customers = [await make_user(app) for _ in range(20)]
    async with from_address(served, "127.0.0.2") as office:
        answers = await asyncio.gather(*(log_in_honestly(office, c.user.email) for c in customers))
    assert [a.status_code for a in answers] == [200] * 20
    # Successes count against nothing: the office's address has no failures on record.
    assert await Attempts.find_one({"key": "login-from:127.0.0.2"}) is None


async def test_a_neighbours_typos_do_not_lock_out_the_next_customer(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    typist, neighbour = await make_user(app), await make_user(app)
    async with from_address(served, "127.0.0.3") as shared:
        for _ in range(6):
            assert (await log_in(shared, typist.user.email, "typo")).status_code == 401
        assert (await log_in(shared, neighbour.user.email, PASSWORD)).status_code == 200
        # The typist, now typing it right, gets in too: six is under the pair's limit.
        assert (await log_in(shared, typist.user.email, PASSWORD)).status_code == 200


async def test_an_attack_on_an_account_never_locks_out_its_owner_elsewhere(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    owner = await make_user(app)
    async with from_address(served, "127.0.0.4") as attacker:
        answers = await asyncio.gather(
            *(log_in(attacker, owner.user.email, f"guess {n}") for n in range(30))
        )
        statuses = [a.status_code for a in answers]
        # At most the pair's limit reached a password check (the rest 429, or 503 busy).
        assert statuses.count(401) <= throttled.login_failures_limit
        assert statuses.count(429) >= 30 - throttled.login_failures_limit - statuses.count(503)
    pair = await Attempts.find_one({"key": f"login:{owner.user.email}|127.0.0.4"})
    assert pair is not None and pair.attempts == 30 and pair.blocked_until is not None
    async with from_address(served, "127.0.0.5") as home:
        assert (await log_in(home, owner.user.email, PASSWORD)).status_code == 200


async def test_one_password_sprayed_over_many_accounts_is_stopped(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    allow_address_failures(app, throttled, 25)
    victim = await make_user(app)
    async with from_address(served, "127.0.0.6") as sprayer:
        statuses = [
            (await log_in(sprayer, f"someone{n}@example.com", "Summer2026!")).status_code
            for n in range(40)
        ]
        assert statuses[:25] == [401] * 25
        assert set(statuses[25:]) == {429}
        assert (await log_in(sprayer, victim.user.email, PASSWORD)).status_code == 429
    # The same account from another address is not refused.
    async with from_address(served, "127.0.0.7") as elsewhere:
        assert (await log_in(elsewhere, victim.user.email, PASSWORD)).status_code == 200


async def test_behind_a_trusted_proxy_an_attacker_is_told_apart_from_the_others(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    allow_address_failures(app, throttled, 15)
    customer = await make_user(app)
    async with from_address(served, PROXY) as proxy:
        for n in range(20):  # the attacker, behind the proxy, sprays
            await log_in(proxy, f"user{n}@example.com", "guess", forwarded_for="198.51.100.7")
        refused = await log_in(proxy, customer.user.email, PASSWORD, forwarded_for="198.51.100.7")
        assert refused.status_code == 429
        # Another customer behind the same proxy is someone else. The left-most entry is the
        # client's own claim and is not believed: only the right-most untrusted one counts.
        honest = await log_in(
            proxy, customer.user.email, PASSWORD, forwarded_for="198.51.100.7, 203.0.113.9"
        )
        assert honest.status_code == 200
    assert await Attempts.find_one({"key": "login-from:198.51.100.7"}) is not None
    assert await Attempts.find_one({"key": f"login-from:{PROXY}"}) is None


async def test_an_untrusted_client_cannot_choose_its_address(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    """Not even from 127.0.0.1, whose X-Forwarded-For uvicorn believes by default."""
    allow_address_failures(app, throttled, 10)
    async with from_address(served, "127.0.0.1") as forger:
        for n in range(15):
            await log_in(forger, f"user{n}@example.com", "guess", forwarded_for=f"192.0.2.{n}")
        assert (await log_in(forger, "user99@example.com", "guess")).status_code == 429
    assert await Attempts.find({"key": {"$regex": "^login-from:192"}}).count() == 0


async def test_a_deleted_account_cannot_check_out(
    app: FastAPI, served: str, throttled: AppSettings
) -> None:
    customer = await make_user(app)
    product = await make_product(stock=5)
    async with from_address(served, "127.0.0.9") as shopper:
        await add_to_cart(shopper, customer, product, 1)  # type: ignore[arg-type]
        await customer.user.delete()
        refused = await shopper.post("/order/create/", headers=customer.headers)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "account_not_found"
    assert await Order.count() == 0
    assert await Cart.find_one({"user_id": customer.id}) is not None  # left as it was
