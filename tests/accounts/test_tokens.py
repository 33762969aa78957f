"""Short-lived access tokens and refresh tokens: rotated on every use, reuse revokes the
login, logout ends it, and an account that is gone or changed cannot refresh."""

import asyncio
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.accounts.models import User
from shop.accounts.service import ensure_admin
from shop.accounts.tokens import RefreshToken
from tests.factories import PASSWORD, Account, assert_problem, make_user


async def log_in(client: AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    answer = await client.post("/auth/token", data={"username": email, "password": password})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    return body


async def refresh(client: AsyncClient, token: str) -> Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def test_a_refresh_token_gives_a_new_pair_once(client: AsyncClient, app: FastAPI) -> None:
    email = (await make_user(app)).user.email
    first = await log_in(client, email)
    assert first["expires_in"] == 15 * 60
    renewed = await refresh(client, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    pair = renewed.json()
    assert pair["refresh_token"] != first["refresh_token"]
    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.json()["email"] == email
    # Stored as hashes only.
    stored = {t.token_hash for t in await RefreshToken.find_all().to_list()}
    assert first["refresh_token"] not in stored and pair["refresh_token"] not in stored


async def test_reusing_a_spent_refresh_token_revokes_the_whole_login(
    client: AsyncClient, app: FastAPI
) -> None:
    email = (await make_user(app)).user.email
    first = await log_in(client, email)
    second = (await refresh(client, first["refresh_token"])).json()
    assert_problem(await refresh(client, first["refresh_token"]), 401, "refresh_token_reused")
    # The live token of that login is revoked too; another login is not affected.
    assert_problem(await refresh(client, second["refresh_token"]), 401, "invalid_refresh_token")
    other = await log_in(client, email)
    assert (await refresh(client, other["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_with_one_token_issue_one_pair(
    client: AsyncClient, app: FastAPI
) -> None:
    email = (await make_user(app)).user.email
    token = (await log_in(client, email))["refresh_token"]
    answers = await asyncio.gather(*(refresh(client, token) for _ in range(10)))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 9
    assert await RefreshToken.count() == 2  # the login's and the one issued
    assert await RefreshToken.find({"revoked": False}).count() == 0  # reuse revoked the login


async def test_logout_ends_the_login(client: AsyncClient, app: FastAPI) -> None:
    email = (await make_user(app)).user.email
    pair = await log_in(client, email)
    logout = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert logout.status_code == 204
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_refresh_token")
    unknown = await client.post("/auth/logout", json={"refresh_token": "never issued"})
    assert unknown.status_code == 204


async def test_a_deleted_or_changed_account_cannot_refresh(
    client: AsyncClient, app: FastAPI, customer: Account
) -> None:
    pair = await log_in(client, customer.user.email)
    await User.get_pymongo_collection().delete_one({"_id": customer.id})
    assert_problem(await refresh(client, pair["refresh_token"]), 401, "invalid_refresh_token")

    await ensure_admin("boss@example.com", "first password", app.state.hashing)
    boss = await log_in(client, "boss@example.com", "first password")
    await ensure_admin("boss@example.com", "first password", app.state.hashing)  # unchanged
    kept = await refresh(client, boss["refresh_token"])
    assert kept.status_code == 200
    await ensure_admin("boss@example.com", "new password", app.state.hashing)
    assert_problem(
        await refresh(client, kept.json()["refresh_token"]), 401, "invalid_refresh_token"
    )


async def test_refresh_tokens_that_are_not_ours_are_refused(client: AsyncClient) -> None:
    assert_problem(await refresh(client, "made-up"), 401, "invalid_refresh_token")
    assert (await client.post("/auth/refresh", json={})).status_code == 422
