from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from beanie import DecimalAnnotation, Document, PydanticObjectId
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from shop.kit.clock import as_utc, utcnow
from shop.kit.documents import to_bson, update_then_read
from shop.kit.errors import ConcurrentUpdate, Conflict, NotFound, Unprocessable, invalid_fields
from shop.kit.money import Money, Price, round_money


class DiscountScope(StrEnum):
    product = "product"
    cart = "cart"


class DiscountKind(StrEnum):
    percent = "percent"
    fixed = "fixed"


class DiscountNotFound(NotFound):
    code, title = "discount_not_found", "Discount not found"


class DiscountRefused(Conflict):
    """A discount that exists but cannot be applied now; each reason has its own code.

    Only reasons a customer can act on (``actionable``) are told to someone trying a code;
    any other is answered as if there were no such code, so that guessing cannot tell
    hidden codes from unknown ones.
    """

    actionable = False


class DiscountCodeTaken(Conflict):
    code, title = "discount_code_taken", "Another discount has this code"


class InvalidDiscount(Unprocessable):
    """A change that would leave a discount's definition inconsistent (as a request body
    that is, it is a validation error)."""

    code, title = "validation_error", "Invalid request"


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
    actionable = True


class DiscountMinSubtotalNotMet(DiscountRefused):
    code, title = "discount_min_subtotal_not_met", "Cart subtotal below the discount's minimum"
    actionable = True


def normalize_code(code: str) -> str:
    """Promo codes are matched without regard to case or surrounding blanks."""
    return code.strip().upper()


Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{3,32}$", examples=["WELCOME10"])]
Limit = Annotated[int, Field(strict=True, ge=1, le=10_000_000)]


class DiscountFields(BaseModel):
    """A discount's definition, checked as a whole: on create, and after every update."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    scope: DiscountScope
    kind: DiscountKind
    value: Price = Field(description="Percent (0 < value <= 100) or an amount of money")
    product_ids: list[PydanticObjectId] = Field(default_factory=list, max_length=1000)
    code: Code | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    min_subtotal: Money | None = None
    usage_limit: Limit | None = None
    per_user_limit: Limit | None = None
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind is DiscountKind.percent and self.value > Decimal(100):
            raise ValueError("a percent discount is at most 100")
        if self.scope is DiscountScope.product:
            if not self.product_ids:
                raise ValueError("a product discount names its product_ids")
            if self.code is not None or self.min_subtotal is not None:
                raise ValueError("code and min_subtotal are for cart discounts")
        elif self.product_ids:
            raise ValueError("a cart discount has no product_ids")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.code is not None:
            self.code = normalize_code(self.code)
        return self


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

    # -- the definition, kept consistent --------------------------------------------------

    @classmethod
    async def define(cls, fields: DiscountFields) -> Self:
        discount = cls(**fields.model_dump())
        try:
            await discount.insert()
        except DuplicateKeyError:
            raise DiscountCodeTaken(f"{fields.code} is taken") from None
        return discount

    @classmethod
    async def update_fields(cls, discount_id: PydanticObjectId, changes: dict[str, Any]) -> Self:
        """Change some fields, if the definition stays consistent as a whole.

        The update is conditional on the definition being as it was read and checked: two
        changes each consistent alone cannot combine into an inconsistent definition.
        """
        current = await cls.get(discount_id)
        if current is None:
            raise DiscountNotFound()
        definition = {name: getattr(current, name) for name in DiscountFields.model_fields}
        try:
            DiscountFields.model_validate(definition | changes)
        except ValidationError as invalid:
            in_body = [{**e, "loc": ("body", *e["loc"])} for e in invalid.errors()]
            detail, errors = invalid_fields(in_body)
            raise InvalidDiscount(detail, errors=errors) from None
        raw = await update_then_read(
            cls.get_pymongo_collection(),
            {"_id": discount_id},
            {"$set": to_bson(changes) | {"updated_at": utcnow()}},
            precondition=to_bson(definition),
        )
        if raw is None:
            raise ConcurrentUpdate("The discount changed meanwhile; read it and try again")
        found: Self = cls.model_validate(raw)
        return found

    @classmethod
    async def deactivate(cls, discount_id: PydanticObjectId) -> Self:
        """It no longer applies to carts; orders already placed keep it."""
        raw = await update_then_read(
            cls.get_pymongo_collection(),
            {"_id": discount_id},
            {"$set": {"active": False, "updated_at": utcnow()}},
        )
        if raw is None:
            raise DiscountNotFound()
        found: Self = cls.model_validate(raw)
        return found

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
