import contextlib
import hashlib
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, NamedTuple

from beanie import Document, PydanticObjectId
from bson import ObjectId
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, OperationFailure

from shop.catalog.models import Product
from shop.kit.clock import utcnow
from shop.kit.db import in_transaction
from shop.kit.documents import update_then_read
from shop.kit.errors import Conflict, NotFound, ShopError, Unprocessable


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


class CartNotFound(NotFound):
    code, title = "cart_not_found", "No such cart"


GUEST_CART_GONE = "No cart has this X-Cart-Token, or it expired"


# A guest's cart token: 256 random bits, URL-safe. Only its SHA-256 is stored.
_GUEST_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class CartOwner(NamedTuple):
    """Whose cart: a customer's, by their id, or a guest's, by the hash of its cart token."""

    user_id: PydanticObjectId | None = None
    guest: str | None = None
    lifetime: timedelta = timedelta(days=7)  # of a guest's cart after its last change

    @classmethod
    def customer(cls, user_id: PydanticObjectId) -> "CartOwner":
        return cls(user_id=user_id)

    @classmethod
    def guest_with(cls, token: str, lifetime: timedelta) -> "CartOwner":
        """The guest whose cart ``token`` names; 404 for a token no cart could have."""
        if not _GUEST_TOKEN.match(token):
            raise CartNotFound("No cart has this X-Cart-Token")
        return cls(guest=hashlib.sha256(token.encode()).hexdigest(), lifetime=lifetime)

    @classmethod
    def new_guest(cls, lifetime: timedelta) -> tuple["CartOwner", str]:
        """A new guest and the token that names its cart (given to the guest, never kept)."""
        token = secrets.token_urlsafe(32)
        return cls.guest_with(token, lifetime), token

    @property
    def is_guest(self) -> bool:
        return self.user_id is None

    def key(self, now: datetime) -> dict[str, Any]:
        """The cart's filter: a customer's is keyed by their id; a guest's is found only
        while it has not expired."""
        if self.user_id is not None:
            return {"_id": self.user_id}
        return {"guest": self.guest, "expires_at": {"$gt": now}}

    def on_insert(self) -> dict[str, Any]:
        """What a customer's cart is created with besides its key."""
        return {} if self.user_id is None else {"user_id": self.user_id}

    def touched(self, now: datetime) -> dict[str, Any]:
        """What every change sets: its time, and a guest cart's new expiry."""
        if self.user_id is not None:
            return {"updated_at": now}
        return {"updated_at": now, "expires_at": now + self.lifetime}


# The state of each cart this process last read or wrote, by its owner: a change to it is
# then one update conditional on its revision, instead of an update and a read. Bounded: past
# this many carts it starts over.
MAX_REMEMBERED = 10_000
_remembered: dict[PydanticObjectId | str | None, "Cart"] = {}


def _owner_id(owner: "CartOwner") -> PydanticObjectId | str | None:
    return owner.user_id if owner.user_id is not None else owner.guest


class CartItem(BaseModel):
    product_id: PydanticObjectId
    quantity: int = Field(gt=0)
    added_at: datetime = Field(default_factory=utcnow)


class Cart(Document):
    """One cart per customer, and one per guest (``GuestCart``), addressed by its unique
    ``user_id`` (or the guest's token hash).

    Every write gives the cart a new ``revision``, so a revision names one state of it. A
    change to the state this process last saw is one update conditional on that revision
    (``_change_remembered``); otherwise, or if the cart changed meanwhile, it is a
    conditional update of the line, which concurrent changes to other lines or more of the
    same line do not disturb, then a read.
    """

    user_id: PydanticObjectId | None = None  # None: a guest's, or a visitor's empty one
    items: list[CartItem] = Field(default_factory=list)
    discount_code: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    # New with every write (an ObjectId: never the same twice, even for a cart deleted and
    # started again). None only before the first write.
    revision: PydanticObjectId | None = None
    # How many orders the customer has placed: checkout numbers the next one from it.
    orders_placed: int = 0

    class Settings:
        name = "carts"  # a customer's cart has their id as its _id: no other index to keep

    @staticmethod
    def collection_of(owner: "CartOwner") -> Any:
        """Customers' carts and guests' live apart: each is found by a unique key of its
        collection (the embedded server answers a partial index's key by a collection scan)."""
        return (GuestCart if owner.is_guest else Cart).get_pymongo_collection()

    def quantity_of(self, product_id: PydanticObjectId) -> int:
        return sum(i.quantity for i in self.items if i.product_id == product_id)

    @property
    def is_empty(self) -> bool:
        return not self.items

    @classmethod
    async def orders_placed_by(
        cls, user_id: PydanticObjectId, session: AsyncClientSession | None = None
    ) -> int:
        """How many orders the customer has placed (their cart counts them)."""
        owner = CartOwner.customer(user_id)
        raw = await cls.get_pymongo_collection().find_one(
            owner.key(utcnow()), {"orders_placed": 1}, session=session
        )
        return 0 if raw is None else int(raw.get("orders_placed", 0))

    @classmethod
    async def count_orders(
        cls, user_id: PydanticObjectId, count: int, session: AsyncClientSession
    ) -> int:
        """Count ``count`` more orders placed by the customer, starting their cart if they
        have none; returns the number of the first. Only inside a transaction: the read and
        the write of the count are one step."""
        owner = CartOwner.customer(user_id)
        cls.forget(owner)
        placed = await cls.orders_placed_by(user_id, session)
        now = utcnow()
        await cls.get_pymongo_collection().update_one(
            owner.key(now),
            {
                "$set": {"orders_placed": placed + count, **cls.new_revision(owner, now)},
                "$setOnInsert": {"items": [], "discount_code": None, **owner.on_insert()},
            },
            upsert=True,
            session=session,
        )
        return placed + 1

    @classmethod
    def read_as(cls, owner: CartOwner, raw: dict[str, Any] | None) -> "Cart":
        """The cart as read; remembered as the owner's latest state."""
        assert raw is not None
        cart: Cart = cls.model_validate(raw)
        cart.remember(owner)
        return cart

    def remember(self, owner: CartOwner) -> None:
        if self.revision is None:
            return
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()
        _remembered[_owner_id(owner)] = self

    @staticmethod
    def last_seen(owner: CartOwner) -> "Cart | None":
        """The owner's cart as this process last read or wrote it, if it did (it may have
        changed elsewhere since)."""
        return _remembered.get(_owner_id(owner))

    @staticmethod
    def forget(owner: CartOwner) -> None:
        _remembered.pop(_owner_id(owner), None)

    @staticmethod
    def new_revision(owner: CartOwner, now: datetime) -> dict[str, Any]:
        """What every write sets: a new revision, the time, and a guest cart's new expiry."""
        return {"revision": ObjectId(), **owner.touched(now)}

    @classmethod
    async def of(cls, owner: CartOwner, session: AsyncClientSession | None = None) -> "Cart":
        """The owner's cart: a customer's, or an unsaved empty one if they never had one; a
        guest's, or 404 once it expired (or never was)."""
        raw = await cls.read(owner, session)
        return cls(user_id=owner.user_id) if raw is None else cls.read_as(owner, raw)

    @classmethod
    async def read(
        cls, owner: CartOwner, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """The owner's cart as stored, not validated: None for a customer who never had one,
        404 for a guest's that expired (or never was)."""
        raw: dict[str, Any] | None = await cls.collection_of(owner).find_one(
            owner.key(utcnow()), session=session
        )
        if raw is None and owner.is_guest:
            raise CartNotFound(GUEST_CART_GONE)
        return raw

    @classmethod
    async def of_user(cls, user_id: PydanticObjectId) -> "Cart":
        return await cls.of(CartOwner.customer(user_id))

    @classmethod
    async def open_for_guest(cls, owner: CartOwner) -> None:
        """Create a new guest's empty cart."""
        now = utcnow()
        cart = GuestCart(
            guest=owner.guest,
            expires_at=now + owner.lifetime,
            updated_at=now,
            revision=PydanticObjectId(),
        )
        await cart.insert()
        cart.remember(owner)

    # -- transitions: each checks the state, changes this copy of it, and answers the update
    # that makes the same change to the stored cart in exactly that state ---------------------

    def add(self, product: Product, quantity: int, limits: "CartLimits") -> dict[str, Any]:
        """Add ``quantity`` of ``product``: more of its line, or a new line."""
        assert product.id is not None
        for index, line in enumerate(self.items):
            if line.product_id == product.id:
                _check_fits(product, line.quantity, quantity, limits)
                more = line.model_copy(update={"quantity": line.quantity + quantity})
                self.items = [*self.items[:index], more, *self.items[index + 1 :]]
                return {"$inc": {f"items.{index}.quantity": quantity}}
        _check_fits(product, 0, quantity, limits)
        if len(self.items) >= limits.lines:
            raise CartFull(f"A cart holds at most {limits.lines} different products")
        item = CartItem(product_id=product.id, quantity=quantity, added_at=self.updated_at)
        self.items = [*self.items, item]
        return {"$push": {"items": item.model_dump()}}

    @classmethod
    async def _change_remembered(
        cls, owner: CartOwner, change: Callable[["Cart"], dict[str, Any]]
    ) -> "Cart | None":
        """``change`` made to the state of the cart this process last saw, in one update
        that lands only if the cart is still in that state (its revision). None when this
        process saw none, the cart changed since, or ``change`` refuses on what may be an old
        state: the caller then changes it the way that reads."""
        seen = _remembered.get(_owner_id(owner))
        if seen is None:
            return None
        now = utcnow()
        changed: Cart = seen.model_copy(update={"updated_at": now})
        try:
            update = change(changed)
        except ShopError:
            return None
        revised = cls.new_revision(owner, now)
        changed.revision = revised["revision"]
        result = await cls.collection_of(owner).update_one(
            {**owner.key(now), "revision": seen.revision},
            {**update, "$set": {**update.get("$set", {}), **revised}},
        )
        if result.matched_count == 0:
            cls.forget(owner)
            return None
        changed.remember(owner)
        return changed

    # -- persisted changes --------------------------------------------------------------------

    @classmethod
    async def add_item(
        cls,
        owner: CartOwner,
        product: Product,
        quantity: int,
        limits: "CartLimits",
    ) -> "Cart":
        """Add ``quantity`` of ``product``, never above its stock nor the cart's limits;
        concurrent adds all count."""
        assert product.id is not None
        _check_fits(product, 0, quantity, limits)
        if added := await cls._change_remembered(owner, lambda c: c.add(product, quantity, limits)):
            return added
        most_before = min(product.stock, limits.line_quantity) - quantity
        carts, now = cls.collection_of(owner), utcnow()
        mine = owner.key(now)
        # The line is addressed with arrayFilters rather than the positional `$` after
        # `$elemMatch`: both work on mongod, only arrayFilters on the embedded server.
        for _ in range(10):
            raw = await update_then_read(
                carts,
                mine,
                {
                    "$inc": {"items.$[line].quantity": quantity},
                    "$set": cls.new_revision(owner, now),
                },
                precondition={
                    "items": {
                        "$elemMatch": {"product_id": product.id, "quantity": {"$lte": most_before}}
                    }
                },
                array_filters=[{"line.product_id": product.id}],
            )
            if raw is not None:
                return cls.read_as(owner, raw)
            item = CartItem(product_id=product.id, quantity=quantity, added_at=now)
            try:
                raw = await update_then_read(
                    carts,
                    mine,
                    {
                        "$push": {"items": item.model_dump()},
                        "$set": cls.new_revision(owner, now),
                        "$setOnInsert": {"discount_code": None, **owner.on_insert()},
                    },
                    precondition={
                        "items.product_id": {"$ne": product.id},
                        f"items.{limits.lines - 1}": {"$exists": False},  # room for a line
                    },
                    upsert=not owner.is_guest,  # a guest's cart exists, or is gone
                )
                if raw is not None:
                    return cls.read_as(owner, raw)
            except DuplicateKeyError:
                pass  # the cart exists, and holds the product already or is full
            held = await cls.of(owner)  # 404 for a guest's cart that is gone
            in_cart = held.quantity_of(product.id)
            if in_cart > most_before:
                _check_fits(product, in_cart, quantity, limits)
            if in_cart == 0 and len(held.items) >= limits.lines:
                raise CartFull(f"A cart holds at most {limits.lines} different products")
            # The line changed between the two updates (removed or added concurrently): again.
        raise CartBusy()

    @classmethod
    async def remove_item(
        cls, owner: CartOwner, product_id: PydanticObjectId, quantity: int | None
    ) -> "Cart":
        """Remove the line, or take ``quantity`` off it (the whole line when that is all of it).

        Each update carries its precondition on the line's quantity, so an add that lands in
        between is never taken away with it: the other update is tried again.
        """
        carts, now = cls.collection_of(owner), utcnow()
        mine = owner.key(now)
        whole_line: dict[str, Any] = {"product_id": product_id}
        if quantity is not None:
            whole_line["quantity"] = {"$lte": quantity}
        for _ in range(10):
            if quantity is not None:
                raw = await update_then_read(
                    carts,
                    mine,
                    {
                        "$inc": {"items.$[line].quantity": -quantity},
                        "$set": cls.new_revision(owner, now),
                    },
                    precondition={
                        "items": {
                            "$elemMatch": {"product_id": product_id, "quantity": {"$gt": quantity}}
                        }
                    },
                    array_filters=[{"line.product_id": product_id}],
                )
                if raw is not None:
                    return cls.read_as(owner, raw)
            raw = await update_then_read(
                carts,
                mine,
                {
                    "$pull": {"items": {"product_id": product_id}},
                    "$set": cls.new_revision(owner, now),
                },
                precondition={"items": {"$elemMatch": whole_line}},
            )
            if raw is not None:
                return cls.read_as(owner, raw)
            if quantity is None or not await carts.find_one(
                {**mine, "items.product_id": product_id}
            ):
                if owner.is_guest and not await carts.find_one(mine):
                    raise CartNotFound(GUEST_CART_GONE)
                raise CartItemNotFound()
            # The line grew between the two updates (a concurrent add): again.
        raise CartBusy()

    @classmethod
    async def set_discount_code(cls, owner: CartOwner, code: str | None) -> "Cart":
        now = utcnow()
        raw = await update_then_read(
            cls.collection_of(owner),
            owner.key(now),
            {
                "$set": {"discount_code": code, **cls.new_revision(owner, now)},
                "$setOnInsert": {"items": [], **owner.on_insert()},
            },
            upsert=not owner.is_guest,
        )
        if raw is None:
            raise CartNotFound(GUEST_CART_GONE)
        return cls.read_as(owner, raw)

    @classmethod
    async def take_guest_cart(cls, owner: CartOwner, session: AsyncClientSession) -> "Cart":
        """End a guest's cart and return what it held, inside the merge's transaction: of
        merges of one cart, at once or one after the other, one gets it and the others 404
        (a concurrent merge, or a change to the guest's cart, is a write conflict, which
        retries the transaction)."""
        carts = cls.collection_of(owner)
        cls.forget(owner)
        raw = await carts.find_one(owner.key(utcnow()), session=session)
        if raw is None:
            raise CartNotFound("No cart has this X-Cart-Token: it expired, or was merged")
        await carts.delete_one({"_id": raw["_id"]}, session=session)
        cart: Cart = cls.model_validate(raw)
        return cart

    @classmethod
    async def store(cls, owner: CartOwner, cart: "Cart", session: AsyncClientSession) -> None:
        """Write ``cart``'s lines and code as the owner's cart, with a new revision, inside the
        caller's transaction: a change to the cart since the transaction read it is a write
        conflict, which retries the transaction."""
        now = utcnow()
        revised = cls.new_revision(owner, now)
        await cls.collection_of(owner).update_one(
            owner.key(now),
            {
                "$set": {
                    "items": [item.model_dump() for item in cart.items],
                    "discount_code": cart.discount_code,
                    **revised,
                },
                "$setOnInsert": owner.on_insert(),
            },
            upsert=not owner.is_guest,
            session=session,
        )
        cart.revision, cart.updated_at = revised["revision"], now

    @classmethod
    async def check_out(
        cls, user_id: PydanticObjectId, session: AsyncClientSession
    ) -> "CheckedOut":
        """Empty the user's cart: what it held, and the cart as it is left.

        Inside checkout's transaction: if checkout refuses, the cart is as it was. A change
        to the cart by anyone else between this read and the update is a write conflict,
        which retries the whole transaction, so nothing added meanwhile is lost or ordered
        by accident; until the transaction ends, other writes to the cart wait for it. The
        caller remembers the emptied cart once the transaction has committed.

        The cart this process last saw is emptied by one update conditional on its revision,
        without a read; if it changed since, the update misses and the cart is read.
        """
        owner = CartOwner.customer(user_id)
        seen = cls.last_seen(owner)
        cls.forget(owner)
        carts = cls.get_pymongo_collection()
        if seen is not None and not seen.is_empty:
            now = utcnow()
            emptied = _emptied(seen, owner, now)
            found = {**owner.key(now), "revision": seen.revision}
            if (await carts.update_one(found, {"$set": emptied}, session=session)).matched_count:
                return CheckedOut(seen, seen.model_copy(update=emptied))
        raw = await carts.find_one(owner.key(utcnow()), session=session)
        if raw is None:
            return CheckedOut(cls(user_id=user_id), cls(user_id=user_id))
        cart: Cart = cls.model_validate(raw)
        if cart.is_empty and cart.discount_code is None:
            return CheckedOut(cart, cart)
        now = utcnow()
        emptied = _emptied(cart, owner, now)
        await carts.update_one(owner.key(now), {"$set": emptied}, session=session)
        return CheckedOut(cart, cart.model_copy(update=emptied))

    @classmethod
    async def key_by_customer(cls) -> int:
        """Move the carts stored before a customer's cart was keyed by their id (a random
        ``_id``, found by a unique index on ``user_id``) to ``_id`` = ``user_id``; returns
        how many. That old index marks a database not moved yet: it is dropped once every
        cart is, so later starts look no further. Each cart moves in a transaction of its
        own (its old document deleted, the new one inserted), so a start that stops half-way
        leaves every cart in one place or the other, and the next start goes on."""
        carts = cls.get_pymongo_collection()
        if OLD_CUSTOMER_INDEX not in await carts.index_information():
            return 0
        moved = 0
        async for raw in carts.find({"user_id": {"$ne": None}}, {"_id": 1, "user_id": 1}):
            if raw["_id"] != raw["user_id"]:
                moved += await in_transaction(partial(_move_cart, carts, raw["_id"]))
        with contextlib.suppress(OperationFailure):  # another process dropped it first
            await carts.drop_index(OLD_CUSTOMER_INDEX)
        return moved


def _check_fits(product: Product, in_cart: int, quantity: int, limits: CartLimits) -> None:
    """Refuse ``quantity`` more of ``product`` beside ``in_cart`` already in the cart, past
    a line's limit or the product's stock."""
    if in_cart + quantity > limits.line_quantity:
        held = f"; {in_cart} already in the cart" if in_cart else ""
        raise LineQuantityExceeded(
            f"A line holds at most {limits.line_quantity} units{held}", products=[str(product.id)]
        )
    if in_cart + quantity > product.stock:
        held = f", {in_cart} already in the cart" if in_cart else ""
        raise InsufficientStock(
            f"Only {product.stock} of {product.name} in stock{held}", products=[str(product.id)]
        )


def _emptied(cart: Cart, owner: CartOwner, now: datetime) -> dict[str, Any]:
    """The fields checkout sets on ``cart``: no lines, no code, one more order placed."""
    return {
        "items": [],
        "discount_code": None,
        "orders_placed": cart.orders_placed + 1,  # this order's number, if it commits
        **Cart.new_revision(owner, now),
    }


class CheckedOut(NamedTuple):
    held: Cart  # what the cart held: what is ordered
    emptied: Cart  # the cart as checkout leaves it

    @property
    def order_number(self) -> int:
        """The customer's number for the order placed from ``held``."""
        return self.emptied.orders_placed


OLD_CUSTOMER_INDEX = "user_id_1"


async def _move_cart(carts: Any, old_id: PydanticObjectId, session: AsyncClientSession) -> int:
    raw = await carts.find_one({"_id": old_id}, session=session)
    if raw is None:
        return 0  # another process moved it
    await carts.delete_one({"_id": old_id}, session=session)
    await carts.insert_one({**raw, "_id": raw["user_id"]}, session=session)
    return 1


class GuestCart(Cart):
    """A guest's cart, in a collection of its own: found by the hash of its token, it lives
    ``CartOwner.lifetime`` after its last change, then the TTL monitor removes it; no read
    returns it after that, whenever the monitor runs."""

    guest: str = Field(description="SHA-256 of the guest's cart token")
    expires_at: datetime

    class Settings:
        name = "guest_carts"
        indexes: ClassVar = [
            IndexModel([("guest", ASCENDING)], unique=True),
            # What every read and write filters on: the embedded server scans the collection
            # for an equality and a range unless one index has both.
            IndexModel([("guest", ASCENDING), ("expires_at", ASCENDING)]),
            IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
        ]
