"""One page type and one opaque cursor for every list (keyset pagination).

A cursor names the last item of a page by its sort keys; the next page starts after it. Its
text is not an interface: clients pass back the ``next_cursor`` they were given.
"""

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, NamedTuple, TypeVar

from beanie import Document, PydanticObjectId
from bson import ObjectId
from fastapi import Query
from pydantic import BaseModel, Field

from shop.kit.errors import Unprocessable

T = TypeVar("T")
U = TypeVar("U")
DocumentT = TypeVar("DocumentT", bound=Document)

Key = datetime | PydanticObjectId | int

# The last millisecond a datetime can hold (9999-12-31T23:59:59.999Z).
_LATEST_MILLIS = 253_402_300_799_999


class InvalidCursor(Unprocessable):
    code, title = "invalid_cursor", "Invalid cursor"


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page"
    )


Cursor = Annotated[
    str | None,
    Query(max_length=100, description="The `next_cursor` of the previous page"),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page")]


def encode_cursor(*keys: Key) -> str:
    parts = [
        str(int(key.timestamp() * 1000)) if isinstance(key, datetime) else str(key) for key in keys
    ]
    return base64.urlsafe_b64encode(":".join(parts).encode()).decode()


def decode_cursor(cursor: str, *kinds: type[Key]) -> tuple[Any, ...]:
    """The keys an ``encode_cursor`` cursor names, of the given kinds; InvalidCursor for
    anything else, however it was crafted."""
    try:
        parts = base64.urlsafe_b64decode(cursor.encode()).decode("ascii").split(":")
    except (ValueError, UnicodeError):
        raise InvalidCursor() from None
    if len(parts) != len(kinds):
        raise InvalidCursor()
    return tuple(_decode_key(part, kind) for part, kind in zip(parts, kinds, strict=True))


def _decode_key(text: str, kind: type[Key]) -> Key:
    if kind is datetime and text.isdigit() and int(text) <= _LATEST_MILLIS:
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    if kind is PydanticObjectId and ObjectId.is_valid(text):
        return PydanticObjectId(text)
    if kind is int and text.isdigit() and len(text) <= 18:
        return int(text)
    raise InvalidCursor()


class Slice(NamedTuple, Generic[T]):
    """What a page holds, before it is shaped for the response."""

    items: list[T]
    next_cursor: str | None

    @classmethod
    def of(cls, found: list[T], limit: int, keys: Callable[[T], tuple[Key, ...]]) -> "Slice[T]":
        """The first ``limit`` of ``found`` (read with one more, to know whether more
        follow), and a cursor made from the sort ``keys`` of the last one."""
        items = found[:limit]
        more = len(found) > limit
        return cls(items, encode_cursor(*keys(items[-1])) if more else None)

    def shaped(self, out: Callable[[T], U]) -> Page[U]:
        return Page[U](items=[out(item) for item in self.items], next_cursor=self.next_cursor)


async def page_by_id(
    model: type[DocumentT], query: dict[str, Any], limit: int, cursor: str | None
) -> Slice[DocumentT]:
    """One page of ``model`` in ``_id`` order."""
    if cursor is not None:
        (after,) = decode_cursor(cursor, PydanticObjectId)
        query = {**query, "_id": {"$gt": after}}
    found = await model.find(query).sort("_id").limit(limit + 1).to_list()
    return Slice.of(found, limit, lambda last: (PydanticObjectId(last.id),))
