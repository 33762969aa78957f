"""Idempotency keys, as the IETF draft and Stripe define them.

The first request with a key runs and its outcome is kept; a retry with the same key and
body gets that outcome again without running anything; the same key with another body is
a client error; the same key while the first request still runs is a conflict.
"""

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

import pymongo
from beanie import Document, Indexed, PydanticObjectId
from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError, PyMongoError

from shop.kit.clock import as_utc, utcnow
from shop.kit.errors import PROBLEM_JSON, Conflict, NotFound, ShopError, Unprocessable

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"
# How long a request may hold its key while running. Longer than a payment attempt holds
# its order, so a retry that takes over finds a crashed attempt ready to be reconciled.
RUNNING_LEASE = timedelta(seconds=60)
# How long a request that failed may take to forget its key. The failure is most often the
# database's own, and the answer must not wait out the operation timeout a second time for
# it; a key not forgotten is taken over by a retry once its lease has run out.
FORGET_TIMEOUT_SECONDS = 1.0


class IdempotencyKeyMissing(ShopError):
    status, code, title = 400, "idempotency_key_missing", "Idempotency-Key header required"


class IdempotencyKeyReused(Unprocessable):
    code, title = "idempotency_key_reused", "Idempotency-Key already used for another request"


class IdempotencyKeyInUse(Conflict):
    code, title = "idempotency_key_in_use", "A request with this Idempotency-Key is still running"


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="A unique key per logical request (a UUID, say). Required.",
    ),
]


class RecordState(StrEnum):
    running = "running"
    done = "done"


class IdempotencyRecord(Document):
    user_id: PydanticObjectId
    operation: str
    key: str
    fingerprint: str
    state: RecordState = RecordState.running
    status_code: int | None = None
    body: Any = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime = Field(default_factory=utcnow)
    expires_at: Annotated[datetime, Indexed(expireAfterSeconds=0)]

    class Settings:
        name = "idempotency_keys"
        indexes: ClassVar = [
            IndexModel(
                [("user_id", ASCENDING), ("operation", ASCENDING), ("key", ASCENDING)],
                unique=True,
            )
        ]


def fingerprint(operation: str, request: Any) -> str:
    canonical = json.dumps(
        {"operation": operation, "request": jsonable_encoder(request)}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def run_once(
    *,
    user_id: PydanticObjectId,
    operation: str,
    key: str | None,
    request: Any,
    keep: timedelta,
    action: Callable[[], Awaitable[BaseModel]],
    status_code: int | Callable[[BaseModel], int] = 200,
) -> JSONResponse:
    """Run ``action`` once per (user, operation, key); replay its outcome afterwards.

    Refusals (``ShopError``) are outcomes too and are replayed, except transient ones (a
    concurrent request got in the way), which say nothing about this one, and 404s (the
    request named nothing of the caller's: keeping those would let anyone fill the store
    with keys). An unexpected failure forgets the key (see ``_forget``), so the client can
    retry with it.
    """
    if key is None:
        raise IdempotencyKeyMissing()
    now = utcnow()
    record = IdempotencyRecord(
        user_id=user_id,
        operation=operation,
        key=key,
        fingerprint=fingerprint(operation, request),
        expires_at=now + keep,
    )
    try:
        await record.insert()
    except DuplicateKeyError:
        first = await _first_with_key(record)
        if first.state is RecordState.done:
            return _replay(first)
        if not await _take_over_abandoned(first, now):
            raise IdempotencyKeyInUse() from None
        record = first

    try:
        result = await action()
    except ShopError as refusal:
        if refusal.transient or isinstance(refusal, NotFound):
            await _forget(record)
            raise
        body = refusal.problem()
        await _finish(record, refusal.status, body)
        return JSONResponse(body, status_code=refusal.status, media_type=PROBLEM_JSON)
    except BaseException:
        await _forget(record)
        raise
    body = jsonable_encoder(result)
    status = status_code(result) if callable(status_code) else status_code
    await _finish(record, status, body)
    return JSONResponse(body, status_code=status)


async def _first_with_key(attempt: IdempotencyRecord) -> IdempotencyRecord:
    first = await IdempotencyRecord.find_one(
        {"user_id": attempt.user_id, "operation": attempt.operation, "key": attempt.key}
    )
    if first is None:  # the first request failed and forgot the key just now
        raise IdempotencyKeyInUse()
    if first.fingerprint != attempt.fingerprint:
        raise IdempotencyKeyReused()
    return first


async def _take_over_abandoned(first: IdempotencyRecord, now: datetime) -> bool:
    """A request still ``running`` after the lease belongs to a process that stopped: the
    retry takes its place (once, however many retries arrive together)."""
    if as_utc(first.started_at) > now - RUNNING_LEASE:
        return False
    taken = await IdempotencyRecord.get_pymongo_collection().update_one(
        {"_id": first.id, "state": RecordState.running.value, "started_at": first.started_at},
        {"$set": {"started_at": now}},
    )
    return taken.matched_count == 1


async def _forget(record: IdempotencyRecord) -> None:
    """Free the key of a request that failed, so that a retry with it runs again. Within
    ``FORGET_TIMEOUT_SECONDS``: past them, or if the database refuses, the key stays
    held until its lease ends, and the request is answered with what made it fail."""
    try:
        with pymongo.timeout(FORGET_TIMEOUT_SECONDS):
            await record.delete()
    except PyMongoError as failure:
        log.warning(
            "idempotency key of %s kept until its lease ends (%s)",
            record.operation,
            type(failure).__name__,
            extra={"fields": {"operation": record.operation, "key": record.key}},
        )


def _replay(first: IdempotencyRecord) -> JSONResponse:
    assert first.status_code is not None
    media_type = PROBLEM_JSON if first.status_code >= 400 else "application/json"
    return JSONResponse(
        first.body,
        status_code=first.status_code,
        media_type=media_type,
        headers={REPLAYED_HEADER: "true"},
    )


async def _finish(record: IdempotencyRecord, status_code: int, body: Any) -> None:
    """Keep the outcome: one update by ``_id`` (Beanie's ``set`` is a ``findAndModify``,
    which the embedded server runs through a scan of every key kept)."""
    await IdempotencyRecord.get_pymongo_collection().update_one(
        {"_id": record.id},
        {"$set": {"state": RecordState.done.value, "status_code": status_code, "body": body}},
    )
