"""The MongoDB connection: a configured server, or an embedded SecantusDB started as a program."""

import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pymongo
from beanie import init_beanie
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError

from shop.accounts.models import User
from shop.cart.models import Cart
from shop.catalog.models import Product
from shop.discounts.models import Discount, DiscountUsage
from shop.idempotency import IdempotencyRecord
from shop.orders.models import Order, PendingOrder
from shop.payments.provider import ProviderCharge, ProviderRefund
from shop.returns.models import ReturnRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

DOCUMENT_MODELS: list[Any] = [
    User,
    Product,
    Cart,
    Order,
    PendingOrder,
    IdempotencyRecord,
    ProviderCharge,
    ProviderRefund,
    Discount,
    DiscountUsage,
    ReturnRequest,
]


def connect(
    url: str,
    listeners: Sequence[monitoring.CommandListener] = (),
    *,
    selection_timeout: float = 30.0,
    timeout: float | None = None,
) -> AsyncMongoClient[Any]:
    """The service's client. Every write, transactions included, is acknowledged only once
    it is in the journal of a majority (``w: "majority", j: true``; keyword arguments win over
    the URL): an order, a payment or a refund the shop has answered survives a crash.

    ``selection_timeout`` bounds the wait for a reachable server, ``timeout`` each operation
    with its retries (PyMongo's client-side operation timeout).
    """
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        event_listeners=list(listeners),
        w="majority",
        journal=True,
        serverSelectionTimeoutMS=int(selection_timeout * 1000),
        connectTimeoutMS=int(selection_timeout * 1000),
        timeoutMS=None if timeout is None else int(timeout * 1000),
    )


_client: AsyncMongoClient[Any] | None = None


async def init_database(client: AsyncMongoClient[Any], db_name: str) -> None:
    """Bind the documents to the database and create the indexes they declare."""
    global _client
    await init_beanie(database=client[db_name], document_models=DOCUMENT_MODELS)
    _client = client


async def in_transaction(callback: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
    """Run ``callback`` in one transaction, retried on transient errors as the driver advises.

    The callback may run more than once: it must not change anything outside the database.
    All attempts together get the client's operation timeout: without it, the driver retries
    a transaction that meets an unreachable server for up to two minutes.
    """
    assert _client is not None, "init_database() first"
    with pymongo.timeout(_client.options.timeout):
        async with _client.start_session() as session:
            return await session.with_transaction(callback)


class EmbeddedMongo:
    """A SecantusDB server run as a separate program on a free loopback port.

    Data lives in ``storage_path`` and is reopened intact on the next start; ``":memory:"``
    gives throw-away storage. The program is GPL-licensed, so it is launched, never imported.
    """

    def __init__(
        self,
        storage_path: str | Path,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        test_commands: bool = False,
    ) -> None:
        self.storage_path = str(storage_path)
        self.host = host
        self.test_commands = test_commands
        self.port = port or _free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def start(self, timeout: float = 30.0) -> None:
        if self.storage_path != ":memory:":
            Path(self.storage_path).mkdir(parents=True, exist_ok=True)
        command = [
            _server_program(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            self.storage_path,
            "--log-level",
            "WARNING",
            *(["--enable-test-commands"] if self.test_commands else []),
        ]
        log.info("starting embedded database: %s", " ".join(command))
        self._process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + timeout
        probe: MongoClient[dict[str, Any]]
        with MongoClient(self.url, serverSelectionTimeoutMS=500) as probe:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"the embedded database exited with {self._process.returncode}; is "
                        f"another shop already using {self.storage_path}?"
                    )
                try:
                    probe.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("embedded database did not start in time") from None
                    time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # the server closes WiredTiger cleanly on SIGTERM
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop it the hard way (SIGKILL), as a crash or a power cut would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> "EmbeddedMongo":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _server_program() -> str:
    beside_python = Path(sys.executable).parent / "secantusd-py"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("secantusd-py")
    if found is None:
        raise RuntimeError("secantusd-py not found: install the SecantusDB package")
    return found


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
