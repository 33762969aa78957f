"""The per-key locks that let this process's stock writers take turns."""

import asyncio
import time
from typing import Any

from beanie import PydanticObjectId
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from shop.catalog.models import Product
from shop.kit.db import attempts_time_limit
from shop.kit.locks import KeyedLocks


async def test_holders_of_overlapping_keys_take_turns_and_the_locks_go_away() -> None:
    locks = KeyedLocks()
    inside: list[str] = []

    async def hold(name: str, keys: list[str]) -> bool:
        async with locks.holding(keys, wait=5) as held:
            inside.append(name)
            assert len(inside) == 1, inside  # never two holders of a key at once
            await asyncio.sleep(0.01)
            inside.remove(name)
            return held

    # Asked for in opposite orders: taken in one order, so no two wait for each other.
    held = await asyncio.gather(*(hold(f"h{i}", ["a", "b"][:: 1 - 2 * (i % 2)]) for i in range(6)))
    assert held == [True] * 6
    assert len(locks) == 0


async def test_a_holder_that_waited_too_long_goes_ahead_without() -> None:
    locks = KeyedLocks()
    async with locks.holding(["a"], wait=1) as first:
        async with locks.holding(["a", "b"], wait=0.05) as second:
            assert (first, second) == (True, False)
        async with locks.holding(["b"], wait=0.05) as third:
            assert third  # what the second gave up is free
    assert len(locks) == 0


async def test_a_stock_writer_that_waited_for_its_turn_has_only_the_rest_of_its_time(
    timed_collection: AsyncCollection[Any],
) -> None:
    """The wait for a product counts against the transaction's time: a checkout queued behind
    a slow one is answered within the operation timeout, not after the wait and a whole
    timeout more."""
    things = timed_collection
    timeout = things.database.client.options.timeout
    assert timeout is not None
    product = PydanticObjectId()
    first_in = asyncio.Event()

    async def slow(session: AsyncClientSession) -> str:
        first_in.set()
        await asyncio.sleep(2.0)  # within its time (the attempts end after 3 s)
        await things.insert_one({"_id": "slow"}, session=session)
        return "slow"

    async def queued(session: AsyncClientSession) -> str:
        await asyncio.sleep(1.5)  # in time counted from its turn, late counted from its wait
        await things.insert_one({"_id": "queued"}, session=session)
        return "queued"

    async def second() -> str:
        await first_in.wait()
        return await Product.in_stock_transaction([product], queued)

    started = time.monotonic()
    first, late = await asyncio.gather(
        Product.in_stock_transaction([product], slow), second(), return_exceptions=True
    )
    took = time.monotonic() - started
    assert first == "slow"
    assert isinstance(late, PyMongoError) and late.timeout, late
    assert took < timeout + 0.5, took
    assert await things.distinct("_id") == ["slow"]  # the late one wrote nothing


async def test_a_stock_writer_whose_time_ran_out_waiting_is_answered_before_the_holder_is_done(
    timed_collection: AsyncCollection[Any],
) -> None:
    """A waiter stops waiting when its attempts would have to end (the timeout less the time
    kept to abort), not when the whole timeout is gone: its 503 comes no later than any
    other writer's."""
    things = timed_collection
    timeout = things.database.client.options.timeout
    assert timeout is not None
    product = PydanticObjectId()
    done: dict[str, float] = {}
    first_in = asyncio.Event()

    async def stuck(session: AsyncClientSession) -> None:
        first_in.set()
        await asyncio.sleep(timeout - 0.2)  # past its attempts' end, within the timeout
        await things.insert_one({"_id": "stuck"}, session=session)

    async def holder() -> None:
        try:
            await Product.in_stock_transaction([product], stuck)
        finally:
            done["holder"] = time.monotonic()

    async def waiter() -> None:
        await first_in.wait()
        try:
            await Product.in_stock_transaction([product], stuck)
        finally:
            done["waiter"] = time.monotonic()

    started = time.monotonic()
    holding, waiting = await asyncio.gather(holder(), waiter(), return_exceptions=True)
    for outcome in holding, waiting:
        assert isinstance(outcome, PyMongoError) and outcome.timeout, outcome
    assert done["waiter"] - started < attempts_time_limit() + 0.3, done
    assert done["waiter"] < done["holder"] - 0.3, done
    assert await things.count_documents({}) == 0
