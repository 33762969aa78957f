from datetime import datetime
from typing import Annotated, Any, NamedTuple

from beanie import Document, Indexed, PydanticObjectId
from pydantic import BaseModel, Field
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from shop.catalog.models import Product
from shop.clock import utcnow
from shop.documents import update_then_read
from shop.errors import Conflict, NotFound, Unprocessable


class InsufficientStock(Conflict):
    code, title = "insufficient_stock", "Not enough stock"


class CartBusy(Conflict):
    code, title = "cart_busy", "The cart is changing too fast; try again"


class CartFull(Unprocessable):
    code, title = "cart_full", "The cart holds as many different products as it may"


class LineQuantityExceeded(Unprocessable):
    code, title = "line_quantity_exceeded", "More units of one product than a cart line holds"


class CartLimits(NamedTuple):
    lines: int
    line_quantity: int


class CartItemNotFound(NotFound):
    code, title = "cart_item_not_found", "Product not in cart"


class CartItem(BaseModel):
    product_id: PydanticObjectId
    quantity: int = Field(gt=0)
    added_at: datetime = Field(default_factory=utcnow)


class Cart(Document):
    """One cart per user. Every change is a single conditional update of the user's cart,
    addressed by its unique ``user_id``, then a read of it."""

    user_id: Annotated[PydanticObjectId, Indexed(unique=True)]
    items: list[CartItem] = Field(default_factory=list)
    discount_code: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "carts"

    def quantity_of(self, product_id: PydanticObjectId) -> int:
        return sum(i.quantity for i in self.items if i.product_id == product_id)

    @property
    def is_empty(self) -> bool:
        return not self.items

    @classmethod
    def from_raw(cls, raw: dict[str, Any] | None) -> "Cart":
        assert raw is not None
        cart: Cart = cls.model_validate(raw)
        return cart

    @classmethod
    async def of_user(
        cls, user_id: PydanticObjectId, session: AsyncClientSession | None = None
    ) -> "Cart":
        """The user's cart; an unsaved empty one if they never had one."""
        raw = await cls.get_pymongo_collection().find_one({"user_id": user_id}, session=session)
        return cls(user_id=user_id) if raw is None else cls.model_validate(raw)

    @classmethod
    async def add_item(
        cls,
        user_id: PydanticObjectId,
        product: Product,
        quantity: int,
        limits: "CartLimits",
    ) -> "Cart":
        """Add ``quantity`` of ``product``, never above its stock nor the cart's limits;
        concurrent adds all count."""
        assert product.id is not None
        if quantity > limits.line_quantity:
            raise LineQuantityExceeded(
                f"A line holds at most {limits.line_quantity} units", products=[str(product.id)]
            )
        most = min(product.stock, limits.line_quantity)
        most_before = most - quantity  # the line may hold at most this much beforehand
        if most_before < 0:
            raise InsufficientStock(
                f"Only {product.stock} of {product.name} in stock", products=[str(product.id)]
            )
        carts, now, mine = cls.get_pymongo_collection(), utcnow(), {"user_id": user_id}
        # The line is addressed with arrayFilters rather than the positional `$` after
        # `$elemMatch`: both work on mongod, only arrayFilters on the embedded server.
        for _ in range(10):
            raw = await update_then_read(
                carts,
                mine,
                {"$inc": {"items.$[line].quantity": quantity}, "$set": {"updated_at": now}},
                precondition={
                    "items": {
                        "$elemMatch": {"product_id": product.id, "quantity": {"$lte": most_before}}
                    }
                },
                array_filters=[{"line.product_id": product.id}],
            )
            if raw is not None:
                return cls.from_raw(raw)
            item = CartItem(product_id=product.id, quantity=quantity, added_at=now)
            try:
                raw = await update_then_read(
                    carts,
                    mine,
                    {
                        "$push": {"items": item.model_dump()},
                        "$set": {"updated_at": now},
                        "$setOnInsert": {"discount_code": None},
                    },
                    precondition={
                        "items.product_id": {"$ne": product.id},
                        f"items.{limits.lines - 1}": {"$exists": False},  # room for a line
                    },
                    upsert=True,
                )
                return cls.from_raw(raw)
            except DuplicateKeyError:
                pass  # the cart exists, and holds the product already or is full
            held = await cls.find_one(cls.user_id == user_id)
            if held is not None and held.quantity_of(product.id) > most_before:
                in_cart = held.quantity_of(product.id)
                if in_cart + quantity > limits.line_quantity:
                    raise LineQuantityExceeded(
                        f"A line holds at most {limits.line_quantity} units; "
                        f"{in_cart} already in the cart",
                        products=[str(product.id)],
                    )
                raise InsufficientStock(
                    f"Only {product.stock} of {product.name} in stock, "
                    f"{in_cart} already in the cart",
                    products=[str(product.id)],
                )
            full = held is not None and len(held.items) >= limits.lines
            if full and held is not None and held.quantity_of(product.id) == 0:
                raise CartFull(f"A cart holds at most {limits.lines} different products")
            # The line changed between the two updates (removed or added concurrently): again.
        raise CartBusy()

    @classmethod
    async def remove_item(
        cls, user_id: PydanticObjectId, product_id: PydanticObjectId, quantity: int | None
    ) -> "Cart":
        """Remove the line, or take ``quantity`` off it (the whole line when that is all of it).

        Each update carries its precondition on the line's quantity, so an add that lands in
        between is never taken away with it: the other update is tried again.
        """
        carts, now, mine = cls.get_pymongo_collection(), utcnow(), {"user_id": user_id}
        whole_line: dict[str, Any] = {"product_id": product_id}
        if quantity is not None:
            whole_line["quantity"] = {"$lte": quantity}
        for _ in range(10):
            if quantity is not None:
                raw = await update_then_read(
                    carts,
                    mine,
                    {"$inc": {"items.$[line].quantity": -quantity}, "$set": {"updated_at": now}},
                    precondition={
                        "items": {
                            "$elemMatch": {"product_id": product_id, "quantity": {"$gt": quantity}}
                        }
                    },
                    array_filters=[{"line.product_id": product_id}],
                )
                if raw is not None:
                    return cls.from_raw(raw)
            raw = await update_then_read(
                carts,
                mine,
                {"$pull": {"items": {"product_id": product_id}}, "$set": {"updated_at": now}},
                precondition={"items": {"$elemMatch": whole_line}},
            )
            if raw is not None:
                return cls.from_raw(raw)
            if quantity is None or not await carts.find_one(
                {"user_id": user_id, "items.product_id": product_id}
            ):
                raise CartItemNotFound()
            # The line grew between the two updates (a concurrent add): again.
        raise CartBusy()

    @classmethod
    async def set_discount_code(cls, user_id: PydanticObjectId, code: str | None) -> "Cart":
        raw = await update_then_read(
            cls.get_pymongo_collection(),
            {"user_id": user_id},
            {
                "$set": {"discount_code": code, "updated_at": utcnow()},
                "$setOnInsert": {"items": []},
            },
            upsert=True,
        )
        return cls.from_raw(raw)

    @classmethod
    async def check_out(cls, user_id: PydanticObjectId, session: AsyncClientSession) -> "Cart":
        """Empty the user's cart and return what it held.

        Inside checkout's transaction: if checkout refuses, the cart is as it was. A change
        to the cart by anyone else between this read and the update is a write conflict,
        which retries the whole transaction, so nothing added meanwhile is lost or ordered
        by accident; until the transaction ends, other writes to the cart wait for it.
        """
        carts = cls.get_pymongo_collection()
        raw = await carts.find_one({"user_id": user_id}, session=session)
        if raw is None:
            return cls(user_id=user_id)
        cart: Cart = cls.model_validate(raw)
        if not cart.is_empty or cart.discount_code is not None:
            await carts.update_one(
                {"user_id": user_id},
                {"$set": {"items": [], "discount_code": None, "updated_at": utcnow()}},
                session=session,
            )
        return cart
