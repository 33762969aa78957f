"""The suite runs against a real MongoDB wire server: an embedded one started once per session,
or the server named by SHOP_MONGODB_URL. Collections are emptied before every test."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from beanie import Document
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from pymongo import monitoring
from pymongo.asynchronous.collection import AsyncCollection

from shop.accounts.models import Role
from shop.cli import SERVER_OPTIONS
from shop.kit import db
from shop.kit.clock import ShiftedClock, use_clock
from shop.kit.config import AppSettings
from shop.kit.db import connect
from shop.kit.embedded import EmbeddedMongo, free_port
from shop.main import DOCUMENTS, create_app
from tests.factories import Account, PausingProvider, make_user, paying_through


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if url := os.environ.get("SHOP_MONGODB_URL"):
        yield url
        return
    with EmbeddedMongo(":memory:", test_commands=True) as server:
        yield server.url


@pytest.fixture(scope="session")
def base_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AppSettings:
    return AppSettings(
        mongodb_url=database_url,
        db_name=os.environ.get("SHOP_TEST_DB_NAME", "shop_test"),
        data_dir=tmp_path_factory.mktemp("data"),
        secret_key=SecretStr("test-signing-key-of-sufficient-length-for-hs256"),
        demo_data=False,
        # Tests sweep when they mean to; a background sweep could race them.
        sweep_interval_seconds=24 * 3600,
    )


class CommandLog(monitoring.CommandListener):
    """Every command the service sends to MongoDB: the round trips a request costs."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []
        self.sent: list[dict[str, Any]] = []  # the commands themselves, as sent

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.commands.append((event.command_name, target if isinstance(target, str) else ""))
        self.sent.append(dict(event.command))

    def clear(self) -> None:
        self.commands.clear()
        self.sent.clear()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_command_log = CommandLog()
monitoring.register(_command_log)  # before any client exists: it sees every command


@pytest.fixture
def db_commands() -> CommandLog:
    _command_log.clear()
    return _command_log


@pytest.fixture
async def timed_collection(
    database_url: str, base_settings: AppSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncCollection[Any]]:
    """A collection of its own in the test database, dropped afterwards, through a client with
    an operation timeout of 4 s (its ``database.client.options.timeout``), which this test's
    transactions (``in_transaction``) use."""
    client = connect(database_url, timeout=4.0)
    monkeypatch.setattr(db, "_client", client)
    collection = client[base_settings.db_name][f"timed_{uuid.uuid4().hex}"]
    try:
        yield collection
    finally:
        await collection.drop()
        await client.close()


@pytest.fixture(scope="session")
async def app(base_settings: AppSettings) -> AsyncIterator[FastAPI]:
    application = create_app(base_settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def settings(app: FastAPI, base_settings: AppSettings) -> Iterator[AppSettings]:
    """This test's settings: change them freely, the next test gets the defaults back."""
    app.state.settings = base_settings.model_copy()
    yield app.state.settings
    app.state.settings = base_settings


@pytest.fixture(autouse=True)
async def _empty_database(app: FastAPI) -> None:
    _command_log.clear()
    model: type[Document]
    for model in DOCUMENTS:
        await model.get_pymongo_collection().delete_many({})


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://shop.test") as http:
        yield http


@pytest.fixture
def clock() -> Iterator[ShiftedClock]:
    """The service's clock, for this test: ``clock.advance(seconds)`` moves time on."""
    shifted = ShiftedClock()
    previous = use_clock(shifted)
    yield shifted
    use_clock(previous)


@pytest.fixture
async def customer(app: FastAPI) -> Account:
    return await make_user(app)


@pytest.fixture
async def admin(app: FastAPI) -> Account:
    return await make_user(app, Role.admin)


@pytest.fixture
def paused_provider(app: FastAPI) -> Iterator[PausingProvider]:
    """The simulated provider, holding every charge until the test lets it go."""
    paused = PausingProvider()
    with paying_through(app, {**app.state.payment_providers, "mock": paused}):
        yield paused


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real loopback socket (the session's lifespan already ran)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, **SERVER_OPTIONS
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # up to 10 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
