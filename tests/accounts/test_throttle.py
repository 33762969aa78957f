"""Logins and registrations cannot be hammered: repeated failures are refused for a growing
while (429, before any password is hashed), and hashing itself is bounded."""

import asyncio
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta

import psutil
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.accounts.models import User
from shop.accounts.security import PasswordHashing
from shop.accounts.throttle import Attempts, Throttles
from shop.kit.clock import utcnow
from shop.kit.config import AppSettings
from shop.kit.errors import Busy
from tests.factories import PASSWORD, Account, assert_problem, make_product, make_user


async def login(client: AsyncClient, email: str, password: str) -> Response:
    return await client.post("/auth/token", data={"username": email, "password": password})


async def time_passes() -> None:
    """Every block runs out (as if its time had passed); the counts stay."""
    await Attempts.get_pymongo_collection().update_many(
        {}, {"$set": {"blocked_until": utcnow() - timedelta(seconds=1)}}
    )


@pytest.fixture
def strict(app: FastAPI, settings: AppSettings) -> Iterator[AppSettings]:
    settings.registrations_per_address = 3
    settings.login_address_failures_limit = 8
    real = app.state.throttles
    app.state.throttles = Throttles.from_settings(settings)
    yield settings
    app.state.throttles = real


async def test_wrong_passwords_for_one_account_are_refused_for_a_while(
    client: AsyncClient, settings: AppSettings, customer: Account
) -> None:
    email = customer.user.email
    for _ in range(settings.login_failures_limit):
        assert_problem(await login(client, email, "wrong password"), 401, "invalid_credentials")
    refused = await login(client, email, "wrong password")
    assert_problem(refused, 429, "too_many_requests")
    assert int(refused.headers["retry-after"]) >= 1
    # While blocked, even the right password is refused: guessing gains nothing.
    assert_problem(await login(client, email, PASSWORD), 429, "too_many_requests")

    await time_passes()
    assert (await login(client, email, PASSWORD)).status_code == 200
    # The count of this account from this address is reset.
    assert await Attempts.find_one({"key": f"login:{email}|127.0.0.1"}) is None


async def test_the_block_grows_with_every_further_failure(
    client: AsyncClient, app: FastAPI, settings: AppSettings
) -> None:
    email = (await make_user(app)).user.email
    waits = []
    for _ in range(settings.login_failures_limit):
        await login(client, email, "wrong password")
    for _ in range(3):
        waits.append(int((await login(client, email, "x")).headers["retry-after"]))
        await time_passes()
        assert_problem(await login(client, email, "still wrong"), 401, "invalid_credentials")
    assert waits[0] < waits[1] < waits[2], waits


async def test_failures_from_one_address_across_accounts_are_refused(
    client: AsyncClient, app: FastAPI, strict: AppSettings
) -> None:
    for n in range(strict.login_address_failures_limit):
        await login(client, f"guess{n}@example.com", "wrong password")
    other = await make_user(app)
    assert_problem(await login(client, other.user.email, PASSWORD), 429, "too_many_requests")


async def test_correct_passwords_never_count_against_the_address(
    client: AsyncClient, app: FastAPI, strict: AppSettings
) -> None:
    customer = await make_user(app)
    for _ in range(3 * strict.login_address_failures_limit):
        assert (await login(client, customer.user.email, PASSWORD)).status_code == 200
    assert await Attempts.find_one({"key": "login-from:127.0.0.1"}) is None


async def test_registrations_from_one_address_are_limited(
    client: AsyncClient, strict: AppSettings
) -> None:
    for n in range(strict.registrations_per_address):
        created = await client.post(
            "/auth/register", json={"email": f"new{n}@example.com", "password": "long enough"}
        )
        assert created.status_code == 201
    refused = await client.post(
        "/auth/register", json={"email": "one-more@example.com", "password": "long enough"}
    )
    assert_problem(refused, 429, "too_many_requests")
    assert await User.count() == strict.registrations_per_address


async def test_hashing_runs_at_most_its_slots_at_once_and_the_rest_are_told_to_wait() -> None:
    hashing = PasswordHashing(concurrency=1, wait=0.01)
    digest = await hashing.hash("some password")
    outcomes = await asyncio.gather(
        *(hashing.verify("guess", digest) for _ in range(10)), return_exceptions=True
    )
    busy = [o for o in outcomes if isinstance(o, Busy)]
    assert busy and len(busy) < 10
    assert all(o is False for o in outcomes if not isinstance(o, Busy))
    assert busy[0].retry_after == 1


async def test_a_login_flood_is_throttled_bounded_in_memory_and_spares_other_requests(
    client: AsyncClient, app: FastAPI, settings: AppSettings
) -> None:
    """60 wrong logins at once against 3 accounts: at most the limit of each reach a
    password check, the rest are 429; the process grows by less than 300 MiB (argon2 takes
    ~64 MiB per running hash); another customer's cart answers within 5 times its idle time
    or 200 ms, whichever is more (the 60 logins' own database commands queue ahead of it;
    before hashing was bounded, it waited 11.7 s)."""
    shopper = await make_user(app)
    await client.post(
        "/cart/add/",
        json={"product_id": str((await make_product()).id), "quantity": 1},
        headers=shopper.headers,
    )

    async def view() -> float:
        started = time.perf_counter()
        assert (await client.get("/cart/", headers=shopper.headers)).status_code == 200
        return time.perf_counter() - started

    idle = statistics.median([await view() for _ in range(10)])
    process = psutil.Process()
    baseline, peak = process.memory_info().rss, 0

    async def watch(done: asyncio.Event) -> list[float]:
        nonlocal peak
        busy_views = []
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            busy_views.append(await view())
        return busy_views

    done = asyncio.Event()
    watcher = asyncio.create_task(watch(done))
    answers = await asyncio.gather(
        *(login(client, f"victim{n % 3}@example.com", f"guess {n}") for n in range(60))
    )
    done.set()
    busy = statistics.median(await watcher)

    statuses = [a.status_code for a in answers]
    assert statuses.count(429) + statuses.count(401) + statuses.count(503) == 60, statuses
    # Each account at this address has its own limit, and never more reach a password
    # check (401, or 503 when every hashing slot was taken); the rest are refused at once.
    checked = statuses.count(401) + statuses.count(503)
    assert statuses.count(401) > 0 and checked <= 3 * settings.login_failures_limit
    assert peak - baseline < 300 * 2**20, (peak - baseline) / 2**20
    assert busy < max(5 * idle, 0.2), (busy, idle)
