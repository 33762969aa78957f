"""Writes that stay cheap as collections grow: optimistic concurrency for documents whose
transitions touch several fields at once, and a conditional update followed by a read."""

import contextlib
from typing import Any, TypeVar

from beanie import Document
from beanie.odm.utils.dump import get_dict
from beanie.odm.utils.encoder import Encoder
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

DocumentT = TypeVar("DocumentT", bound=Document)


def to_bson(value: Any) -> Any:
    """Encode a value as Beanie stores it (Decimal as Decimal128, enums as values, ...)."""
    return Encoder(to_db=True).encode(value)


class VersionedDocument(Document):
    """A document saved only if nobody saved it since it was read.

    Every save is ``replace_one({_id, version: read_version})``: the filter carries the
    precondition, so of two concurrent transitions from the same state exactly one lands.
    """

    version: int = 0

    async def save_if_unchanged(self, session: AsyncClientSession | None = None) -> bool:
        read_version = self.version
        self.version += 1
        result = await self.get_pymongo_collection().replace_one(
            {"_id": self.id, "version": read_version},
            get_dict(self, to_db=True),
            session=session,
        )
        if result.matched_count == 0:
            self.version = read_version
            return False
        return True


async def update_then_read(
    collection: AsyncCollection[dict[str, Any]],
    key: dict[str, Any],
    update: dict[str, Any] | list[dict[str, Any]],
    *,
    precondition: dict[str, Any] | None = None,
    array_filters: list[dict[str, Any]] | None = None,
    upsert: bool = False,
    session: AsyncClientSession | None = None,
) -> dict[str, Any] | None:
    """A conditional update of the one document ``key`` names, then that document as it
    stands; None (and nothing changed) when ``precondition`` did not hold.

    ``findAndModify`` does both in one command, but the embedded server writes it through a
    scan of the whole collection (it re-asserts the filter under a top-level ``$and``, which
    no index serves): 55 ms at 10,000 documents. An ``update`` whose filter is ``key``'s
    plain equality (``_id`` or a unique field, first) plus the precondition, and a
    ``find_one`` by ``key``, stay flat on it and on mongod. The read may show a later
    change by someone else: the document as it is now, not as this update left it.
    """
    result = await collection.update_one(
        {**key, **(precondition or {})},
        update,
        upsert=upsert,
        array_filters=array_filters,
        session=session,
    )
    if result.matched_count == 0 and result.upserted_id is None:
        return None
    return await collection.find_one(key, session=session)


class Sequence(Document):
    """A counter handing out 1, 2, 3, ...: one small document per sequence (the catalog's
    positions, say), so the ``findAndModify`` that takes a number stays cheap."""

    id: str  # type: ignore[assignment]
    value: int = 0

    class Settings:
        name = "sequences"

    @classmethod
    async def take(cls, name: str, count: int = 1) -> int:
        """The last of ``count`` new numbers of sequence ``name``; each is handed out once."""
        sequences = cls.get_pymongo_collection()
        while True:
            raw = await sequences.find_one_and_update(
                {"_id": name}, {"$inc": {"value": count}}, return_document=ReturnDocument.AFTER
            )
            if raw is not None:
                return int(raw["value"])
            # The first number: create the sequence (once, whoever races), then take it.
            with contextlib.suppress(DuplicateKeyError):
                await sequences.insert_one({"_id": name, "value": 0})

    @classmethod
    async def last(cls, name: str) -> int:
        """The highest number handed out so far (0 before the first)."""
        raw = await cls.get_pymongo_collection().find_one({"_id": name})
        return 0 if raw is None else int(raw["value"])
