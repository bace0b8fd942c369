"""The one clock.

Every "now" in `temporal` comes from here, so tests can pin time without
sleeping. On PostgreSQL, version timestamps come from the database clock
(see ``_backend``); this module is the clock for SQLite stamps and for the
library's own bookkeeping.

It also owns the two ways users write time: moments (ISO-8601, always
timezone-aware, normalized to UTC) and durations (``90d``, ``12h``, ``30s``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from temporal.errors import InvalidTimeError

UTC = timezone.utc

_pinned: datetime | None = None


def now() -> datetime:
    """The current moment, timezone-aware UTC (or the pinned one in tests)."""
    return _pinned if _pinned is not None else datetime.now(UTC)


@contextlib.contextmanager
def pinned(moment: datetime) -> Iterator[None]:
    """Make :func:`now` return ``moment`` inside the block."""
    global _pinned
    previous, _pinned = _pinned, aware(moment)
    try:
        yield
    finally:
        _pinned = previous


def aware(moment: datetime, *, what: str = "time") -> datetime:
    """Return ``moment`` in UTC; refuse a naive datetime with a clear message."""
    if not isinstance(moment, datetime):
        raise InvalidTimeError(f"{what} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise InvalidTimeError(
            f"{what} {moment.isoformat()} is naive; pass a timezone-aware datetime, "
            "e.g. datetime(2026, 3, 1, tzinfo=timezone.utc)"
        )
    return moment.astimezone(UTC)


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 moment: ``2026-03-01``, ``2026-03-01T12:00:00Z``, ``...+02:00``.

    A date alone means midnight UTC; a time without an offset is taken as UTC.
    """
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise InvalidTimeError(
            f"cannot read {text!r} as a time; use ISO-8601 such as 2026-03-01 "
            "or 2026-03-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidTimeError(f"{text!r} is out of range once moved to UTC (years 1 to "
                               "9999)") from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Long enough for any TTL, short enough that "now minus it" is still a date.
LONGEST = timedelta(days=365_000)
_DURATION = re.compile(r"(\d+)\s*([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``90d``, ``12h``, ``30s``, ``1w`` or ``1d12h``."""
    raw = text.strip().lower()
    parts = _DURATION.findall(raw)
    if not raw or not parts or "".join(f"{n}{u}" for n, u in parts) != raw.replace(" ", ""):
        raise InvalidTimeError(
            f"cannot read {text!r} as a duration; use a number and a unit "
            "(s, m, h, d, w), e.g. 90d, 12h, 30s"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds > LONGEST.total_seconds():
        raise InvalidTimeError(f"{text!r} is too long a duration; the longest is "
                               f"{LONGEST.days}d (1,000 years)")
    return timedelta(seconds=seconds)


def isoformat(moment: datetime) -> str:
    """Canonical text for a moment: UTC, microseconds, ``Z`` suffix, a four-digit year."""
    utc = aware(moment)
    # strftime's %Y drops leading zeros on some platforms (year 1 as "1").
    return f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%S.%fZ")


def format_duration(duration: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back as ``duration`` (``90d``, ``1d12h``)."""
    seconds = round(duration.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
