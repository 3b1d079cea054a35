"""One grammar wherever a time in the past is asked (keys/durations.py ``parse_time``): an ISO
8601 time with a zone, a UTC date, or a span ago (``1d``, ``7d``). The daily usage report
took dates only (``usage report --since 1d`` was refused while ``keys report --since 7d``
worked), and a bulk revocation's ``issued_before`` ISO times only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.store import Store
from tests.flows import admin_call, ok
from tests.helpers import Cli, FakeClock, assert_error

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "until", "days"),
    [
        ("1d", None, ("2026-11-26", "2026-11-27")),
        ("7d", "0d", ("2026-11-20", "2026-11-27")),
        ("36h", "12h", ("2026-11-25", "2026-11-26")),
        ("2026-11-26T23:30:00Z", "2026-11-27", ("2026-11-26", "2026-11-27")),
        ("2026-11-20", "2026-11-21", ("2026-11-20", "2026-11-21")),
    ],
)
def test_the_daily_report_takes_dates_times_and_spans_ago(
    client: Any,
    auditor: IssuedToken,
    clock: FakeClock,
    since: str,
    until: str | None,
    days: tuple[str, str],
) -> None:
    clock.now = NOW
    query = f"since={since}" + (f"&until={until}" if until else "")
    body = ok(admin_call(client, auditor, "GET", f"/usage/daily?{query}"))
    assert (body["since"], body["until"]) == days


@pytest.mark.parametrize("since", ["1x", "11/20/2026", "7", "-1d"])
def test_the_daily_report_refuses_other_forms(
    client: Any, auditor: IssuedToken, clock: FakeClock, since: str
) -> None:
    clock.now = NOW
    response = admin_call(client, auditor, "GET", f"/usage/daily?since={since}")
    assert_error(response, 400, "invalid_value", "since")


def test_usage_report_since_a_span_from_the_cli(cli: Cli) -> None:
    assert cli("usage", "report", "--since", "1d", "--json").output.strip() == "[]"
    refused = cli("usage", "report", "--since", "yesterday", code=1)
    assert "a span ago (24h, 7d)" in refused.output


def test_a_bulk_revocation_takes_issued_before_as_a_span_ago(
    client: Any,
    admin: IssuedToken,
    clock: FakeClock,
    store: Store,
    make_key: Callable[..., IssuedKey],
) -> None:
    clock.now = NOW - timedelta(days=3)
    old = make_key()
    clock.now = NOW
    new = make_key()

    body = ok(
        admin_call(
            client, admin, "POST", "/keys/revoke", {"issued_before": "2d", "reason": "old batch"}
        )
    )

    assert body["revoked"] == [old.key.id]
    with store.read() as tx:
        assert tx.keys.get(new.key.id).status == "active"
