from datetime import timedelta

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from shop.accounts import security
from shop.accounts.models import Role, User
from shop.accounts.security import ALGORITHM
from shop.accounts.service import ensure_admin
from shop.kit.clock import utcnow
from tests.factories import assert_problem, make_user


async def test_register_then_log_in_and_read_me(client: AsyncClient) -> None:
    created = await client.post(
        "/auth/register", json={"email": "Ann@Example.com", "password": "s3cret-pass"}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["email"] == "ann@example.com"
    assert body["role"] == "customer"
    stored = await User.find_one(User.email == "ann@example.com")
    assert stored is not None
    assert "s3cret-pass" not in stored.password_hash

    token = await client.post(
        "/auth/token", data={"username": "ann@example.com", "password": "s3cret-pass"}
    )
    assert token.status_code == 200
    assert token.json()["token_type"] == "bearer"
    me = await client.get(
        "/auth/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert me.json() == body


async def test_duplicate_email_is_a_conflict(client: AsyncClient) -> None:
    payload = {"email": "bob@example.com", "password": "long-enough"}
    assert (await client.post("/auth/register", json=payload)).status_code == 201
    again = await client.post("/auth/register", json={**payload, "email": "BOB@example.com"})
    assert_problem(again, 409, "email_taken")
    assert await User.find(User.email == "bob@example.com").count() == 1


async def test_wrong_password_and_unknown_email_are_refused_alike(client: AsyncClient) -> None:
    await client.post("/auth/register", json={"email": "c@example.com", "password": "long-enough"})
    wrong = await client.post("/auth/token", data={"username": "c@example.com", "password": "nope"})
    unknown = await client.post(
        "/auth/token", data={"username": "x@example.com", "password": "long-enough"}
    )
    assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(unknown, 401, "invalid_credentials")


async def test_register_validates_its_input(client: AsyncClient) -> None:
    bad = await client.post(
        "/auth/register", json={"email": "not-an-email", "password": "short", "role": "admin"}
    )
    body = assert_problem(bad, 422, "validation_error")
    fields = {tuple(e["loc"]) for e in body["errors"]}  # type: ignore[attr-defined]
    assert {("body", "email"), ("body", "password"), ("body", "role")} <= fields
    assert await User.count() == 0


async def test_missing_malformed_and_expired_tokens_are_401(
    client: AsyncClient, app: FastAPI
) -> None:
    account = await make_user(app)
    expired = jwt.encode(
        {"sub": str(account.id), "role": "customer", "exp": utcnow() - timedelta(minutes=1)},
        app.state.signing_key,
        algorithm=ALGORITHM,
    )
    forged = jwt.encode(
        {"sub": str(account.id), "role": "admin", "exp": utcnow() + timedelta(minutes=5)},
        "some-other-key-that-is-long-enough-for-hs256",
        algorithm=ALGORITHM,
    )
    assert_problem(await client.get("/order/history/"), 401, "not_authenticated")
    for token, code in [
        ("garbage", "invalid_token"),
        (forged, "invalid_token"),
        (expired, "token_expired"),
    ]:
        for path in ("/order/history/", "/cart/"):  # a refused token is no guest's either
            response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert_problem(response, 401, code)


async def test_a_token_accepted_before_is_refused_once_it_expires(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens are verified once per process; their expiry is checked on every use."""
    account = await make_user(app)
    soon = jwt.encode(
        {"sub": str(account.id), "role": "customer", "exp": utcnow() + timedelta(seconds=60)},
        app.state.signing_key,
        algorithm=ALGORITHM,
    )
    headers = {"Authorization": f"Bearer {soon}"}
    assert (await client.get("/cart/", headers=headers)).status_code == 200
    later = utcnow() + timedelta(seconds=61)
    monkeypatch.setattr(security, "utcnow", lambda: later)
    assert_problem(await client.get("/cart/", headers=headers), 401, "token_expired")


async def test_configured_admin_exists_with_updated_password(
    client: AsyncClient, app: FastAPI
) -> None:
    await ensure_admin("Boss@example.com", "first-password", app.state.hashing)
    await ensure_admin("boss@example.com", "second-password", app.state.hashing)
    admins = await User.find(User.role == Role.admin).to_list()
    assert [a.email for a in admins] == ["boss@example.com"]
    old = await client.post(
        "/auth/token", data={"username": "boss@example.com", "password": "first-password"}
    )
    new = await client.post(
        "/auth/token", data={"username": "boss@example.com", "password": "second-password"}
    )
    assert old.status_code == 401
    assert new.status_code == 200
    me = await client.get(
        "/auth/me", headers={"Authorization": f"Bearer {new.json()['access_token']}"}
    )
    assert me.json()["role"] == "admin"
