"""One duration grammar for the CLI and the API (keys/durations.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keys.durations import MAX_DURATION, describe, parse_duration, parse_timestamp
from keys.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        (90, 90),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43_200),
        ("30d", 2_592_000),
        ("2w", 1_209_600),
        (" 24 H ", 86_400),
        ("0", 0),
        ("3650d", 315_360_000),
    ],
)
def test_the_grammar(text: str | int, seconds: int) -> None:
    assert parse_duration(text, "expires_in") == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["", "h", "1.5h", "-5", -5, "5y", "1h30m", True, None, 1.5, "999999999w", 10**30, "9" * 40],
)
def test_anything_else_is_a_clear_invalid_input(text: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_duration(text, "expires_in")  # type: ignore[arg-type]
    assert caught.value.param == "expires_in"


def test_the_maximum_is_documented_and_enforced() -> None:
    assert describe(MAX_DURATION) == "3650d"
    with pytest.raises(InvalidInput, match="at most 3650d"):
        parse_duration("3651d", "expires_in")
    with pytest.raises(InvalidInput, match="at most 1d"):
        parse_duration(86_401, "grace_seconds", maximum=timedelta(hours=24))


def test_a_unit_can_be_required_where_a_bare_number_would_mislead() -> None:
    assert parse_duration("400d", "older_than", require_unit=True) == timedelta(days=400)
    for bare in ("400", 400):
        with pytest.raises(InvalidInput, match="needs a unit"):
            parse_duration(bare, "older_than", require_unit=True)


def test_timestamps_need_a_zone_and_stay_within_the_calendar() -> None:
    assert parse_timestamp("2026-12-31T01:00:00+01:00", "expires_at") == datetime(
        2026, 12, 31, tzinfo=UTC
    )
    assert parse_timestamp("2026-12-31T00:00:00Z", "expires_at").tzinfo == UTC
    for bad in (
        "2026-12-31T00:00:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "soon",
        5,
    ):
        with pytest.raises(InvalidInput) as caught:
            parse_timestamp(bad, "expires_at")  # type: ignore[arg-type]
        assert caught.value.param == "expires_at"
