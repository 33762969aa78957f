"""Time is timezone-aware UTC everywhere."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes stored and in-memory times compare equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(moment: datetime) -> datetime:
    """Stored times come back naive from a client without tz_aware; treat them as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
