"""Per-key locks of one process, for writers that would otherwise meet as write conflicts."""

import asyncio
from collections.abc import AsyncIterator, Hashable, Iterable
from contextlib import asynccontextmanager


class KeyedLocks:
    """One ``asyncio.Lock`` per key, made on first use and dropped once nobody holds or
    waits for it. ``holding`` takes every key asked for, in sorted order, so that two holders
    of overlapping keys never wait for each other in a circle."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}

    @asynccontextmanager
    async def holding(self, keys: Iterable[Hashable], wait: float) -> AsyncIterator[bool]:
        """Hold ``keys``; whether it does. A lock is a courtesy among this process's writers,
        not what keeps data right: after ``wait`` seconds the holder goes ahead without."""
        wanted = sorted(set(keys), key=str)
        for key in wanted:
            self._users[key] = self._users.get(key, 0) + 1
            self._locks.setdefault(key, asyncio.Lock())
        taken: list[asyncio.Lock] = []
        try:
            try:
                async with asyncio.timeout(wait):
                    for key in wanted:
                        await self._locks[key].acquire()
                        taken.append(self._locks[key])
            except TimeoutError:
                for lock in taken:
                    lock.release()
                taken = []
            yield len(taken) == len(wanted)
        finally:
            for lock in taken:
                lock.release()
            for key in wanted:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
