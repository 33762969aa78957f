"""Optimistic concurrency for documents whose transitions touch several fields at once."""

from typing import Any, TypeVar

from beanie import Document
from beanie.odm.utils.dump import get_dict
from beanie.odm.utils.encoder import Encoder
from pymongo.asynchronous.client_session import AsyncClientSession

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
