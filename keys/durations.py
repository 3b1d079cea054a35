"""Durations and points in time as people type them: one grammar for the CLI and the API.

A duration is a whole number with an optional unit: ``90`` or ``90s`` (seconds), ``15m``,
``12h``, ``30d``, ``2w``; JSON may also give a plain integer of seconds. It is never negative
and at most ``MAX_DURATION`` (ten years); a field may allow less (a rotation grace, 30 days).
A time is ISO 8601 with a zone (``2026-12-31T00:00:00Z``), between the years 1 and 9999 in
UTC; where a time in the past is asked (a report's start, keys issued before), also a UTC
date (``2026-11-27``) or a span ago in the duration grammar (``24h``, ``7d``): ``parse_time``.
Anything else is an ``InvalidInput`` naming the parameter: never an overflow deep inside.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from keys.errors import InvalidInput

MAX_DURATION = timedelta(days=3650)
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
EXAMPLES = "3600, 90s, 15m, 12h, 30d or 2w"

# At most 12 digits: the product is checked against the maximum as a plain int, before any
# timedelta (which overflows past 999,999,999 days) is built.
_DURATION = re.compile(r"(\d{1,12})\s*([smhdw]?)")


def describe(duration: timedelta) -> str:
    """A duration in the grammar's largest exact unit: ``30d``, ``24h``, ``90s``."""
    seconds = int(duration.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_duration(
    value: str | int,
    param: str,
    *,
    maximum: timedelta = MAX_DURATION,
    require_unit: bool = False,
) -> timedelta:
    """A duration in the grammar above, at most ``maximum``.

    ``require_unit`` refuses a bare number where a reader could take it for days (a retention
    in seconds would delete almost everything). Raises InvalidInput.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{param} must be a duration such as {EXAMPLES}", param=param)
    if isinstance(value, int):
        if require_unit:
            raise InvalidInput(f"{param} needs a unit, e.g. 90d or 12h", param=param)
        seconds = value
    else:
        match = _DURATION.fullmatch(value.strip().lower())
        if not match:
            raise InvalidInput(f"{param} must be a duration such as {EXAMPLES}", param=param)
        if require_unit and not match.group(2):
            raise InvalidInput(f"{param} needs a unit, e.g. 90d or 12h", param=param)
        seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds < 0:
        raise InvalidInput(f"{param} must not be negative", param=param)
    if seconds > maximum.total_seconds():
        raise InvalidInput(f"{param} may be at most {describe(maximum)}", param=param)
    return timedelta(seconds=seconds)


def parse_timestamp(value: str, param: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-12-31T00:00:00Z``), in UTC. Raises InvalidInput."""
    if not isinstance(value, str):
        raise InvalidInput(f"{param} must be an ISO 8601 time", param=param)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{param} must be an ISO 8601 time", param=param) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{param} must include a time zone, e.g. Z", param=param)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before the year 1 in UTC
        raise InvalidInput(
            f"{param} must be between the years 1 and 9999 in UTC", param=param
        ) from None


def parse_time(text: str, param: str, now: datetime) -> datetime:
    """An ISO 8601 time with a zone, a UTC date (``2026-11-27``), or a span ago (``90m``,
    ``24h``, ``7d``, ``2w``). Raises InvalidInput."""
    text = text.strip()
    if text[:1].isdigit() and text[-1:].lower() in UNITS.keys() - {""}:
        # A span ago, in the one duration grammar (keys/durations.py); a unit is required
        # so that a bare number is never taken for a time.
        return now - parse_duration(text, param, require_unit=True)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if value.tzinfo is None:
            raise InvalidInput(f"{param} must include a time zone, e.g. Z", param=param)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 or after 9999 in UTC
        raise InvalidInput(
            f"{param} must be an ISO 8601 time with a zone (2026-11-27T09:00:00Z), "
            "a date (2026-11-27) or a span ago (24h, 7d)",
            param=param,
        ) from None
