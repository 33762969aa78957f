"""The per-key locks that let this process's stock writers take turns."""

import asyncio

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
