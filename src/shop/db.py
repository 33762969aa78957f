"""The MongoDB connection and the one transaction helper. Imports no domain module: the
application's lifespan hands it the documents to bind."""

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pymongo
from beanie import Document, init_beanie
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession

log = logging.getLogger(__name__)
T = TypeVar("T")


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


async def init_database(
    client: AsyncMongoClient[Any], db_name: str, documents: Sequence[type[Document]]
) -> None:
    """Bind ``documents`` to the database and create the indexes they declare."""
    global _client
    await init_beanie(database=client[db_name], document_models=list(documents))
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
