"""Time is timezone-aware UTC everywhere, and read from one injectable clock.

Every rule that depends on the time (payment deadlines, payment holds, token expiry,
discount periods, return windows) reads ``utcnow()``. The system clock serves by default;
``use_clock`` puts another in its place (tests move time instead of sleeping).
"""

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ShiftedClock:
    """The system clock moved by an offset that only grows: time runs on as it does, and
    ``advance`` jumps ahead."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


_clock: Clock = SystemClock()


def use_clock(clock: Clock) -> Clock:
    """Read the time from ``clock`` from now on; returns the clock it replaces."""
    global _clock
    previous, _clock = _clock, clock
    return previous


def utcnow() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes stored and in-memory times compare equal.
    now = _clock.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(moment: datetime) -> datetime:
    """Stored times come back naive from a client without tz_aware; treat them as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
