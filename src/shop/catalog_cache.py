"""What the cart shows of the catalog and the discounts, read through a short-lived cache.

Carts are read far more often than products and discounts change, and every database round
trip is shared with every other request. So the cart's requests take products and discounts
from here:

- an entry is at most ``max_age`` seconds old (``SHOP_CATALOG_CACHE_SECONDS``; 0 turns the
  cache off and every read goes to the database);
- every write this process sends to ``products`` or ``discounts`` drops what it touched at
  once: an admin's edit, a checkout's stock reservation, a cancellation's restock. A PyMongo
  command listener on the service's own client sees them all, so no code path can forget to
  invalidate. Writes inside a transaction drop their entries again when it commits, and a
  read that raced a write never stores what it read;
- other processes' writes show within ``max_age``;
- requests that miss the same entries at once share one read: an entry that expires under
  load is missed by every request in flight at that moment, and each sent the same query.
  A write this process sends ends that sharing, so a request after it reads anew.

Checkout, payment and returns never read from here: they read inside their transaction, so
a stale price or stock figure can change what a cart shows for a moment, never what is
charged or reserved.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import monitoring

from shop.catalog.models import Product
from shop.discounts.models import Discount, DiscountScope

T = TypeVar("T")
PRODUCTS, DISCOUNTS = "products", "discounts"
# Bounds the memory of a shop with a large catalog: past this, the product entries start over.
MAX_PRODUCTS = 20_000
ALL = None  # "every entry of the collection" where a write names no ids
AUTOMATIC = "automatic"  # the key of the read of the automatic discounts
MAX_OPEN_TRANSACTIONS = 10_000


# A reading of the monotonic clock, in seconds (never money, never a date).
Instant = float


@dataclass(frozen=True)
class _Entry(Generic[T]):
    """A cached value and the instant it stops being served."""

    expires: Instant
    value: T


@dataclass(frozen=True)
class Snapshot:
    """What the cache serves now to price one cart: its products, the discounts that may
    price it, and the entries they came from. It reads as the cache does (a
    ``CatalogReader``), without a wait: a quote priced from it is the cache's quote for as
    long as ``CatalogCache.serves`` it."""

    found: dict[PydanticObjectId, Product]
    relevant: list[Discount]
    products_held: tuple[tuple[PydanticObjectId, _Entry[Product | None]], ...]
    automatic_held: _Entry[list[Discount]]
    code: str | None
    code_held: _Entry[Discount | None] | None
    expires: Instant  # the first of its entries to expire

    async def products(self, ids: Iterable[PydanticObjectId]) -> dict[PydanticObjectId, Product]:
        return {i: self.found[i] for i in ids if i in self.found}

    async def discounts(
        self, product_ids: Iterable[PydanticObjectId], code: str | None
    ) -> list[Discount]:
        return self.relevant


class CatalogCache:
    def __init__(self, max_age: float, clock: Callable[[], Instant] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        # None for a product or code that does not exist: remembered too.
        self._products: dict[PydanticObjectId, _Entry[Product | None]] = {}
        self._automatic: _Entry[list[Discount]] | None = None
        self._codes: dict[str, _Entry[Discount | None]] = {}
        # Bumped by every invalidation: a read that began before it does not store its result.
        self._generation = 0
        # The reads in flight, by what they read ("automatic", ("code", c), a product's id).
        self._reading: dict[Hashable, asyncio.Future[Any]] = {}
        self.invalidator = _Invalidator(self)

    @property
    def enabled(self) -> bool:
        return self.max_age > 0

    # -- reads -------------------------------------------------------------------------------

    async def products(self, ids: Iterable[PydanticObjectId]) -> dict[PydanticObjectId, Product]:
        now = self.clock()
        found: dict[PydanticObjectId, Product] = {}
        missing: list[PydanticObjectId] = []
        for product_id in ids:
            entry = self._products.get(product_id)
            if entry is None or entry.expires <= now:
                missing.append(product_id)
            elif entry.value is not None:
                found[product_id] = entry.value
        if not missing:
            return found
        if not self.enabled:
            found.update(await Product.many(missing))
            return found
        unread = [i for i in missing if i not in self._reading]
        if unread:
            self._share(unread, self._read_products(unread, now))
        for read in dict.fromkeys(self._reading[i] for i in missing):  # each read once
            fetched: dict[PydanticObjectId, Product] = await asyncio.shield(read)
            found.update((i, fetched[i]) for i in missing if i in fetched)
        return found

    async def _read_products(
        self, ids: list[PydanticObjectId], now: Instant
    ) -> dict[PydanticObjectId, Product]:
        generation = self._generation
        fetched = await Product.many(ids)
        if generation == self._generation:
            if len(self._products) + len(ids) > MAX_PRODUCTS:
                self._products.clear()
            expires = now + self.max_age
            for product_id in ids:
                self._products[product_id] = _Entry(expires, fetched.get(product_id))
        return fetched

    async def discounts(
        self, product_ids: Iterable[PydanticObjectId], code: str | None
    ) -> list[Discount]:
        """The discounts that may price a cart of these products holding ``code``: active
        automatic ones (cart discounts and the products' sales) and the code's, active or not
        (the cart says why it does not apply)."""
        relevant = _pricing(await self._automatic_discounts(), product_ids)
        if code is not None and (coded := await self._code(code)) is not None:
            relevant.append(coded)
        return relevant

    async def _automatic_discounts(self) -> list[Discount]:
        now = self.clock()
        if self._automatic is not None and self._automatic.expires > now:
            return self._automatic.value

        async def read() -> list[Discount]:
            generation = self._generation
            found = await Discount.find({"active": True, "code": None}).to_list()
            if self.enabled and generation == self._generation:
                self._automatic = _Entry(now + self.max_age, found)
            return found

        return await self._shared(AUTOMATIC, read)

    async def _code(self, code: str) -> Discount | None:
        now = self.clock()
        cached = self._codes.get(code)
        if cached is not None and cached.expires > now:
            return cached.value

        async def read() -> Discount | None:
            generation = self._generation
            found = await Discount.find_one({"code": code})
            if self.enabled and generation == self._generation:
                self._codes[code] = _Entry(now + self.max_age, found)
            return found

        return await self._shared(("code", code), read)

    async def _shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``'s answer, or that of the same read already in flight."""
        if not self.enabled:
            return await read()
        if key not in self._reading:
            self._share([key], read())
        result: T = await asyncio.shield(self._reading[key])
        return result

    def _share(self, keys: Sequence[Hashable], read: Awaitable[Any]) -> None:
        """Run ``read`` as a task of its own, which every caller missing ``keys`` awaits
        (shielded: a caller that gives up does not cancel it for the others)."""
        task = asyncio.ensure_future(read)
        for key in keys:
            self._reading[key] = task

        def done(_: asyncio.Future[Any]) -> None:
            for key in keys:
                if self._reading.get(key) is task:
                    del self._reading[key]
            if not task.cancelled():
                task.exception()  # retrieved: raised to its callers, if any is left

        task.add_done_callback(done)

    # -- snapshots --------------------------------------------------------------------------

    def snapshot(
        self, product_ids: Sequence[PydanticObjectId], code: str | None
    ) -> Snapshot | None:
        """What a quote of these products and ``code`` reads here, if all of it is cached
        and fresh now; None otherwise (the quote then reads through ``products`` and
        ``discounts``, which fill the cache)."""
        if not self.enabled:
            return None
        products = tuple((i, self._products.get(i)) for i in product_ids)
        automatic = self._automatic
        coded = None if code is None else self._codes.get(code)
        held: list[_Entry[Any] | None] = [automatic, *(entry for _, entry in products)]
        if code is not None:
            held.append(coded)
        now = self.clock()
        fresh = [entry for entry in held if entry is not None and entry.expires > now]
        if automatic is None or len(fresh) < len(held):
            return None
        relevant = _pricing(automatic.value, product_ids)
        if coded is not None and coded.value is not None:
            relevant.append(coded.value)
        return Snapshot(
            found={i: e.value for i, e in products if e is not None and e.value is not None},
            relevant=relevant,
            products_held=tuple((i, e) for i, e in products if e is not None),
            automatic_held=automatic,
            code=code,
            code_held=coded,
            expires=min(entry.expires for entry in fresh),
        )

    def serves(self, snapshot: Snapshot) -> bool:
        """Whether every entry of ``snapshot`` is still what the cache serves: none was
        dropped by a write, and none has expired."""
        return (
            self.clock() < snapshot.expires
            and self._automatic is snapshot.automatic_held
            and all(self._products.get(i) is entry for i, entry in snapshot.products_held)
            and (snapshot.code is None or self._codes.get(snapshot.code) is snapshot.code_held)
        )

    # -- invalidation ------------------------------------------------------------------------

    def forget(self, collection: str, ids: set[Any] | None) -> None:
        """Drop the entries a write touched: ``ids`` of ``collection``, or all (``ALL``)."""
        self._generation += 1
        if collection == PRODUCTS:
            if ids is ALL:
                self._products.clear()
                for product_id in [k for k in self._reading if isinstance(k, ObjectId)]:
                    del self._reading[product_id]
            else:
                for product_id in ids:
                    self._products.pop(product_id, None)
                    self._reading.pop(product_id, None)
        elif collection == DISCOUNTS:
            self._automatic = None
            self._codes.clear()
            for key in [k for k in self._reading if not isinstance(k, ObjectId)]:
                del self._reading[key]


def _pricing(automatic: list[Discount], product_ids: Iterable[PydanticObjectId]) -> list[Discount]:
    """The automatic discounts that may price a cart of these products."""
    wanted = set(product_ids)
    return [
        d for d in automatic if d.scope is DiscountScope.cart or wanted.intersection(d.product_ids)
    ]


_WRITES = {"insert": "documents", "update": "updates", "delete": "deletes", "findAndModify": ""}
_ENDS = {"commitTransaction", "abortTransaction"}
Touched = list[tuple[str, set[Any] | None]]


class _Invalidator(monitoring.CommandListener):
    """Sees every command the service's client sends, and drops what writes touch: when the
    write is sent and again when it is answered (a read in between could have stored the state
    before it). Writes inside a transaction are dropped once more when it commits."""

    def __init__(self, cache: CatalogCache) -> None:
        self.cache = cache
        self._answering: dict[int, Touched] = {}  # by request id, until the server answers
        self._in_transactions: dict[Any, Touched] = {}  # by session id, until commit or abort

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, command = event.command_name, event.command
        if name in _ENDS:
            touched = self._in_transactions.pop(_session_id(command), [])
        elif name in _WRITES and command.get(name) in (PRODUCTS, DISCOUNTS):
            touched = [(command[name], _touched_ids(name, command))]
            if command.get("autocommit") is False:
                if len(self._in_transactions) > MAX_OPEN_TRANSACTIONS:
                    self._in_transactions.clear()  # sessions that never ended; all dropped above
                    touched = [(PRODUCTS, ALL), (DISCOUNTS, ALL)]
                self._in_transactions.setdefault(_session_id(command), []).extend(touched)
        else:
            return
        if touched:
            self._forget(touched)
            self._answering[event.request_id] = touched

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._forget(self._answering.pop(event.request_id, []))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._forget(self._answering.pop(event.request_id, []))

    def _forget(self, touched: Touched) -> None:
        for collection, ids in touched:
            self.cache.forget(collection, ids)


def _session_id(command: Mapping[str, Any]) -> Any:
    lsid = command.get("lsid")
    return None if lsid is None else lsid.get("id")


def _touched_ids(name: str, command: Mapping[str, Any]) -> set[Any] | None:
    """The ``_id``s a write names, or ALL when any of its statements names none."""
    if name == "insert":
        return {doc.get("_id") for doc in command.get("documents", [])}
    if name == "findAndModify":
        filters = [command.get("query", {})]
    else:
        filters = [statement.get("q", {}) for statement in command.get(_WRITES[name], [])]
    ids: set[Any] = set()
    for query in filters:
        named = query.get("_id")
        if isinstance(named, ObjectId):
            ids.add(named)
        elif isinstance(named, dict) and isinstance(named.get("$in"), list):
            ids.update(named["$in"])
        else:
            return ALL
    return ids
