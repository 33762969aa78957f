from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from beanie import DecimalAnnotation, Document, PydanticObjectId
from pydantic import Field
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession

from shop.clock import as_utc, utcnow
from shop.errors import Conflict, NotFound
from shop.money import round_money


class DiscountScope(StrEnum):
    product = "product"
    cart = "cart"


class DiscountKind(StrEnum):
    percent = "percent"
    fixed = "fixed"


class DiscountNotFound(NotFound):
    code, title = "discount_not_found", "Discount not found"


class DiscountRefused(Conflict):
    """A discount that exists but cannot be applied now; each reason has its own code."""


class DiscountInactive(DiscountRefused):
    code, title = "discount_inactive", "Discount is not active"


class DiscountNotStarted(DiscountRefused):
    code, title = "discount_not_started", "Discount has not started yet"


class DiscountExpired(DiscountRefused):
    code, title = "discount_expired", "Discount has ended"


class DiscountUsedUp(DiscountRefused):
    code, title = "discount_used_up", "Discount has been redeemed as often as it may be"


class DiscountPerUserLimitReached(DiscountRefused):
    code, title = "discount_per_user_limit_reached", "You have used this discount already"


class DiscountMinSubtotalNotMet(DiscountRefused):
    code, title = "discount_min_subtotal_not_met", "Cart subtotal below the discount's minimum"


REFUSALS: dict[str, type[DiscountRefused]] = {
    refusal.code: refusal
    for refusal in (
        DiscountInactive,
        DiscountNotStarted,
        DiscountExpired,
        DiscountUsedUp,
        DiscountPerUserLimitReached,
        DiscountMinSubtotalNotMet,
    )
}


def normalize_code(code: str) -> str:
    """Promo codes are matched without regard to case or surrounding blanks."""
    return code.strip().upper()


class Discount(Document):
    """A product sale (``scope=product``) or a cart discount, automatic or behind a code.

    ``percent`` takes that share off; ``fixed`` takes an amount off each unit of a product,
    or off the cart, never more than the price.
    """

    name: str
    scope: DiscountScope
    kind: DiscountKind
    value: DecimalAnnotation
    product_ids: list[PydanticObjectId] = Field(default_factory=list)
    code: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    min_subtotal: DecimalAnnotation | None = None
    usage_limit: int | None = None
    per_user_limit: int | None = None
    times_used: int = 0
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "discounts"
        indexes: ClassVar = [
            IndexModel([("scope", ASCENDING), ("active", ASCENDING), ("product_ids", ASCENDING)]),
            IndexModel(
                [("code", ASCENDING)],
                unique=True,
                partialFilterExpression={"code": {"$type": "string"}},
            ),
        ]

    # -- rules -----------------------------------------------------------------------------

    def refusal(
        self, now: datetime, subtotal: Decimal | None = None, used_by_user: int = 0
    ) -> DiscountRefused | None:
        """Why this discount cannot apply now, or None when it can."""
        if not self.active:
            return DiscountInactive()
        if self.starts_at is not None and now < as_utc(self.starts_at):
            return DiscountNotStarted()
        if self.ends_at is not None and now >= as_utc(self.ends_at):
            return DiscountExpired()
        if self.usage_limit is not None and self.times_used >= self.usage_limit:
            return DiscountUsedUp()
        if self.per_user_limit is not None and used_by_user >= self.per_user_limit:
            return DiscountPerUserLimitReached()
        if self.min_subtotal is not None and subtotal is not None and subtotal < self.min_subtotal:
            return DiscountMinSubtotalNotMet(
                f"Spend at least {self.min_subtotal} to use this discount"
            )
        return None

    def amount_off(self, price: Decimal) -> Decimal:
        """What this discount takes off ``price``: rounded, never more than the price."""
        value = Decimal(self.value)
        if self.kind is DiscountKind.percent:
            return min(round_money(price * value / 100), price)
        return min(value, price)

    def unit_amount_off(self, unit_price: Decimal, quantity: int) -> Decimal:
        """A product discount on a line: percent of the line, or a fixed amount per unit."""
        if self.kind is DiscountKind.percent:
            return self.amount_off(unit_price * quantity)
        return self.amount_off(unit_price) * quantity

    # -- redemptions: counted atomically at checkout, given back on cancellation ------------

    @classmethod
    async def redeem(
        cls, discounts: list["Discount"], user_id: PydanticObjectId, session: AsyncClientSession
    ) -> None:
        """Count one use of each discount by this user, within both limits, or raise.

        Raise at the first refusal: the caller's transaction is aborted with nothing counted.
        """
        for discount in discounts:
            query: dict[str, object] = {"_id": discount.id, "active": True}
            if discount.usage_limit is not None:
                query["times_used"] = {"$lt": discount.usage_limit}
            taken = await cls.get_pymongo_collection().update_one(
                query, {"$inc": {"times_used": 1}}, session=session
            )
            if taken.matched_count == 0:
                raise DiscountUsedUp(f"{discount.code or discount.name} is no longer available")
            assert discount.id is not None
            limit = discount.per_user_limit
            # Per-user uses are counted while there is a per-user limit to enforce: a sale
            # without one costs no extra writes at checkout.
            if limit is not None and not await DiscountUsage.take(
                discount.id, user_id, limit, session
            ):
                raise DiscountPerUserLimitReached()

    @classmethod
    async def give_back(
        cls,
        discount_ids: list[PydanticObjectId],
        user_id: PydanticObjectId,
        session: AsyncClientSession,
    ) -> None:
        for discount_id in discount_ids:
            await cls.get_pymongo_collection().update_one(
                {"_id": discount_id, "times_used": {"$gt": 0}},
                {"$inc": {"times_used": -1}},
                session=session,
            )
            await DiscountUsage.get_pymongo_collection().update_one(
                {"discount_id": discount_id, "user_id": user_id, "used": {"$gt": 0}},
                {"$inc": {"used": -1}},
                session=session,
            )


class DiscountUsage(Document):
    """How often one user redeemed one discount: the counter behind ``per_user_limit``."""

    discount_id: PydanticObjectId
    user_id: PydanticObjectId
    used: int = 0

    class Settings:
        name = "discount_usage"
        indexes: ClassVar = [
            IndexModel([("user_id", ASCENDING), ("discount_id", ASCENDING)], unique=True)
        ]

    @classmethod
    async def counts(
        cls,
        user_id: PydanticObjectId,
        discount_ids: list[PydanticObjectId],
        session: AsyncClientSession | None = None,
    ) -> dict[PydanticObjectId, int]:
        if not discount_ids:
            return {}
        query = {"user_id": user_id, "discount_id": {"$in": discount_ids}}
        found = await cls.find(query, session=session).to_list()
        return {u.discount_id: u.used for u in found}

    @classmethod
    async def take(
        cls,
        discount_id: PydanticObjectId,
        user_id: PydanticObjectId,
        limit: int,
        session: AsyncClientSession,
    ) -> bool:
        """One more use for this user, if their limit allows it."""
        query = {"discount_id": discount_id, "user_id": user_id, "used": {"$lt": limit}}
        counters = cls.get_pymongo_collection()
        taken = await counters.update_one(query, {"$inc": {"used": 1}}, session=session)
        if taken.matched_count == 1:
            return True
        if await counters.find_one(
            {"discount_id": discount_id, "user_id": user_id}, session=session
        ):
            return False  # at the limit
        # First use. A concurrent first use is a write conflict, which retries the transaction.
        await counters.insert_one(
            {"discount_id": discount_id, "user_id": user_id, "used": 1}, session=session
        )
        return limit >= 1
