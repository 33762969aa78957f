import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self, TypeVar

from beanie import DecimalAnnotation, Document, Insert, PydanticObjectId, before_event
from pydantic import Field, model_validator
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.kit.clock import utcnow
from shop.kit.db import attempts_time_limit, in_transaction
from shop.kit.documents import Sequence, to_bson, update_then_read
from shop.kit.errors import NotFound
from shop.kit.locks import KeyedLocks
from shop.kit.pagination import Slice, decode_cursor

CATALOG = "catalog"  # the sequence of catalog positions
T = TypeVar("T")

# The stock writers of this process (checkout, a cancellation, a refund) hold the products
# they write for the length of their transaction, so that two of them wait in turn instead
# of meeting in a write conflict, which aborts one and retries it after a backoff. Writers
# in other processes still conflict, and the transaction still decides.
_stock_writers = KeyedLocks()


class ProductNotFound(NotFound):
    code, title = "product_not_found", "Product not found"


class Product(Document):
    """A catalog entry. ``stock`` is what is still available: checkout reserves from it."""

    name: str
    description: str = ""
    price: DecimalAnnotation
    stock: int = Field(ge=0)
    # Every unit ever put into stock by the shop (the first stock, and each change to it
    # since): the books check stock + reserved + sold - returned against it.
    received: int | None = None
    active: bool = True
    sku: str | None = None
    # The product's place in the catalog, handed out once from a sequence: pages are bounded
    # ranges of it (see ``page``).
    position: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "products"
        indexes: ClassVar = [
            IndexModel([("active", ASCENDING), ("position", ASCENDING)]),
            IndexModel([("position", ASCENDING)]),
            IndexModel(
                [("sku", ASCENDING)],
                unique=True,
                partialFilterExpression={"sku": {"$type": "string"}},
            ),
        ]

    @model_validator(mode="after")
    def _received_at_least_the_first_stock(self) -> Self:
        if self.received is None:
            self.received = self.stock
        return self

    @before_event(Insert)
    async def _take_position(self) -> None:
        if self.position is None:
            self.position = await Sequence.take(CATALOG)

    @property
    def unit_price(self) -> Decimal:
        return Decimal(self.price)

    # -- who sees what: customers see active products only; admins see every one -----------

    @staticmethod
    def visible_query(admin: bool) -> dict[str, Any]:
        return {} if admin else {"active": True}

    def is_visible_to(self, admin: bool) -> bool:
        return admin or self.active

    @classmethod
    def visible_or_raise(cls, product: "Product | None", admin: bool = False) -> Self:
        if product is None or not product.is_visible_to(admin):
            raise ProductNotFound()
        return product

    @classmethod
    async def page(cls, admin: bool, limit: int, cursor: str | None) -> Slice["Product"]:
        """One page of the catalog in position order, as bounded ranges of positions.

        "Everything after the cursor, sorted, first ``limit``" makes the embedded server
        read every product after the cursor before it sorts (690 ms for a first page of
        50,000); a bounded range reads only what it returns, on mongod too, so a first page
        and a deep one cost the same. Positions left unused or taken by withdrawn products
        leave a range short: the next, twice as wide, goes on from there, up to the last
        position handed out.
        """
        after = decode_cursor(cursor, int)[0] if cursor is not None else 0
        visible = cls.visible_query(admin)
        found: list[Product] = []
        # Half a page more than needed: a catalog with a few withdrawn products still fills
        # a page from one range (one in ten withdrawn took three reads with an exact fit).
        width, last = limit + 1 + (limit + 1) // 2, None
        while True:
            span = {"position": {"$gt": after, "$lte": after + width}}
            found += (
                await cls.find({**visible, **span})
                .sort("position")
                .limit(limit + 1 - len(found))
                .to_list()
            )
            if len(found) > limit:
                break
            after += width
            last = await Sequence.last(CATALOG) if last is None else last
            if after >= last:
                break
            width *= 2
        return Slice.of(found, limit, lambda product: (product.catalog_position,))

    @property
    def catalog_position(self) -> int:
        assert self.position is not None, "positions are handed out on insert"
        return self.position

    @classmethod
    async def number_unplaced(cls) -> int:
        """Give a position to every product that has none (those stored before positions
        existed), in the order they were created; returns how many."""
        unplaced = await cls.find({"position": None}).sort("_id").to_list()
        if not unplaced:
            return 0
        last = await Sequence.take(CATALOG, len(unplaced))
        first = last - len(unplaced) + 1
        for offset, product in enumerate(unplaced):
            await cls.get_pymongo_collection().update_one(
                {"_id": product.id, "position": None}, {"$set": {"position": first + offset}}
            )
        return len(unplaced)

    @classmethod
    async def reserve(
        cls, quantities: dict[PydanticObjectId, int], session: AsyncClientSession
    ) -> bool:
        """Take each quantity from its product's stock if that much is there, never below zero;
        one command for any number of products. False if any product is short: the caller's
        transaction is then aborted, so the reservations that did land are undone."""
        result = await cls.get_pymongo_collection().bulk_write(
            [
                UpdateOne(
                    {"_id": product_id, "active": True, "stock": {"$gte": quantity}},
                    {"$inc": {"stock": -quantity}},
                )
                for product_id, quantity in quantities.items()
            ],
            ordered=False,
            session=session,
        )
        return result.matched_count == len(quantities)

    @staticmethod
    async def in_stock_transaction(
        product_ids: Iterable[PydanticObjectId],
        callback: Callable[[AsyncClientSession], Awaitable[T]],
    ) -> T:
        """Run ``callback`` in one transaction (``in_transaction``) that writes these
        products' stock, once this process's other writers of them are done.

        The wait counts against the transaction's time, so a writer that waited is answered
        within the same operation timeout as any other, and the wait ends when the time for
        its attempts does: a writer whose time ran out waiting fails (503) without trying.
        It never goes ahead while a holder is still at work: it would meet the holder, and
        every other waiter that did, in write conflicts, and a queue of checkouts of one
        product would become a storm of aborted attempts.
        """
        since = time.monotonic()
        async with _stock_writers.holding(product_ids, attempts_time_limit()):
            return await in_transaction(callback, since=since)

    @classmethod
    async def restock(
        cls,
        quantities: dict[PydanticObjectId, int],
        session: AsyncClientSession | None = None,
    ) -> None:
        """Put units back (released reservations, returned goods)."""
        for product_id, quantity in quantities.items():
            await cls.get_pymongo_collection().update_one(
                {"_id": product_id}, {"$inc": {"stock": quantity}}, session=session
            )

    @classmethod
    async def many(
        cls, ids: list[PydanticObjectId], session: AsyncClientSession | None = None
    ) -> dict[PydanticObjectId, "Product"]:
        found = await cls.find({"_id": {"$in": ids}}, session=session).to_list()
        return {p.id: p for p in found if p.id is not None}

    @classmethod
    async def update_fields(cls, product_id: PydanticObjectId, fields: dict[str, Any]) -> Self:
        """Set only the given fields, so a concurrent stock reservation is never overwritten.

        A new ``stock`` counts the difference as received, in the same atomic update, so the
        books stay whole whatever reservations run meanwhile.
        """
        changes = {k: {"$literal": v} for k, v in to_bson(fields).items()}
        changes["updated_at"] = {"$literal": utcnow()}
        if "stock" in fields:
            difference = {"$subtract": [fields["stock"], "$stock"]}
            changes["received"] = {"$add": [{"$ifNull": ["$received", "$stock"]}, difference]}
        raw = await update_then_read(
            cls.get_pymongo_collection(), {"_id": product_id}, [{"$set": changes}]
        )
        if raw is None:
            raise ProductNotFound()
        found: Self = cls.model_validate(raw)
        return found
