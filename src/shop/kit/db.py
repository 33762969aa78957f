"""The MongoDB connection and the one transaction helper. Imports no domain module: the
application's lifespan hands it the documents to bind."""

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pymongo
from beanie import Document, init_beanie
from beanie.odm.utils.typing import get_index_attributes
from pymongo import AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ExecutionTimeout

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
    the URL): an order, a payment or a refund the shop has answered survives a crash. Reads
    go to the primary, even when the URL names another read preference.

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
        # Transactions and read-your-writes need the primary, whatever the URL asks for.
        readPreference="primary",
        serverSelectionTimeoutMS=int(selection_timeout * 1000),
        connectTimeoutMS=int(selection_timeout * 1000),
        timeoutMS=None if timeout is None else int(timeout * 1000),
    )


_client: AsyncMongoClient[Any] | None = None


async def init_database(
    client: AsyncMongoClient[Any],
    db_name: str,
    documents: Sequence[type[Document]],
    *,
    build_indexes: bool = True,
) -> None:
    """Bind ``documents`` to the database and create the indexes they declare; an index
    whose declaration changed since it was built is built anew. A reader that must change
    nothing (``shop audit``) passes ``build_indexes=False``."""
    global _client
    if build_indexes:
        await rebuild_changed_indexes(client[db_name], documents)
    await init_beanie(
        database=client[db_name], document_models=list(documents), skip_indexes=not build_indexes
    )
    _client = client


# What a transaction keeps of its time to abort: an attempt cut off by the deadline must still
# tell the server, or what it wrote stays locked until the server reaps the transaction (60 s
# on mongod, `transactionLifetimeLimitSeconds`), and every writer of those documents waits.
ABORT_RESERVE_SECONDS = 1.0


# How long PyMongo's ``with_transaction`` goes on retrying when no operation timeout is set.
WITH_TRANSACTION_LIMIT_SECONDS = 120.0


def attempts_time_limit() -> float:
    """How long the attempts of one ``in_transaction`` call may take, counted from its start
    (or its ``since``): the operation timeout less ``ABORT_RESERVE_SECONDS``, or half of a
    shorter one."""
    assert _client is not None, "init_database() first"
    budget = _client.options.timeout
    if budget is None:
        return WITH_TRANSACTION_LIMIT_SECONDS
    return max(budget - ABORT_RESERVE_SECONDS, budget / 2)


async def in_transaction(
    callback: Callable[[AsyncClientSession], Awaitable[T]], *, since: float | None = None
) -> T:
    """Run ``callback`` in one transaction, retried on transient errors as the driver advises.

    The callback may run more than once: it must not change anything outside the database.
    All attempts together get the client's operation timeout, counted from ``since`` (a
    ``time.monotonic()`` reading) when the caller already spent some of it waiting for its
    turn: without a timeout, the driver retries a transaction that meets an unreachable server
    for up to two minutes. The attempts end ``ABORT_RESERVE_SECONDS`` before that (or halfway
    through a shorter timeout), so that the driver's abort of the last one still has time to
    reach the server.
    """
    assert _client is not None, "init_database() first"
    budget = _client.options.timeout
    if budget is None:
        async with _client.start_session() as session:
            return await session.with_transaction(callback)
    started = time.monotonic() if since is None else since
    attempts_end = started + attempts_time_limit()

    def attempts_left() -> float:
        left = attempts_end - time.monotonic()
        if left < 0.05:  # nothing worth sending: PyMongo would send maxTimeMS 0, no limit
            raise ExecutionTimeout("The transaction ran out of time", 50)
        return left

    async def attempt(session: AsyncClientSession) -> T:
        with pymongo.timeout(attempts_left()):
            return await callback(session)

    attempts_left()  # the caller's wait for its turn may have taken all of it
    async with _client.start_session() as session:
        with pymongo.timeout(started + budget - time.monotonic()):
            return await session.with_transaction(attempt)


# What a declaration can change about an index; the rest of what a server reports is its own.
_FLAGS = ("unique", "sparse")
_VALUES = ("expireAfterSeconds", "partialFilterExpression")


def declared_indexes(document: type[Document]) -> list[IndexModel]:
    """The indexes ``document`` declares, as Beanie builds them: ``Indexed`` fields and
    ``Settings.indexes``."""
    declared = []
    for name, field in document.model_fields.items():
        if (attributes := get_index_attributes(field)) is not None:
            direction, options = attributes
            declared.append(IndexModel([(field.alias or name, direction)], **options))
    extra = getattr(getattr(document, "Settings", None), "indexes", None) or []
    return declared + [index for index in extra if isinstance(index, IndexModel)]


def _same_index(built: dict[str, Any], wanted: dict[str, Any]) -> bool:
    keys = [(field, int(order)) for field, order in built["key"]]
    if keys != [(field, int(order)) for field, order in wanted["key"].items()]:
        return False
    if any(bool(built.get(flag)) != bool(wanted.get(flag)) for flag in _FLAGS):
        return False
    return all(built.get(option) == wanted.get(option) for option in _VALUES)


async def rebuild_changed_indexes(
    database: AsyncDatabase[Any], documents: Sequence[type[Document]]
) -> list[str]:
    """Drop every index whose declaration no longer matches what was built (another key, a
    new TTL, unique added or removed), so that it is built anew as declared; creating it
    over the old one would fail with ``IndexOptionsConflict``. Returns what was dropped."""
    dropped = []
    for document in documents:
        collection = database[document.Settings.name]
        built = await collection.index_information()
        for index in declared_indexes(document):
            wanted = index.document
            current = built.get(wanted["name"])
            if current is not None and not _same_index(current, wanted):
                log.warning(
                    "index %s.%s changed its definition (%s, was %s): building it anew",
                    collection.name,
                    wanted["name"],
                    {k: v for k, v in wanted.items() if k != "name"},
                    current,
                )
                await collection.drop_index(wanted["name"])
                dropped.append(f"{collection.name}.{wanted['name']}")
    return dropped
