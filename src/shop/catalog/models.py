from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from beanie import DecimalAnnotation, Document, PydanticObjectId
from pydantic import Field, model_validator
from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.clock import utcnow
from shop.documents import to_bson
from shop.errors import NotFound


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
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "products"
        indexes: ClassVar = [
            IndexModel([("active", ASCENDING), ("_id", ASCENDING)]),
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
        raw = await cls.get_pymongo_collection().find_one_and_update(
            {"_id": product_id}, [{"$set": changes}], return_document=ReturnDocument.AFTER
        )
        if raw is None:
            raise ProductNotFound()
        found: Self = cls.model_validate(raw)
        return found
