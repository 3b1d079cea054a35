"""The one translation of exceptions into HTTP: gateway/http/errors.py.

Every domain exception is defined in keys/errors.py and has its own line in the status
table (so none silently becomes a 400 or a 500); the most specific line wins; an exception
the table does not know is a logged 500; upstream failures keep their status and fields.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from datetime import UTC, datetime, timedelta

import pytest

import gateway
import keys
from gateway.http.errors import DOMAIN_STATUS, api_error, domain_status
from gateway.upstream.client import UpstreamError, UpstreamUnanswered
from keys import errors
from keys.errors import (
    DomainError,
    HoneytokenUsed,
    InvalidInput,
    Lockdown,
    NotFound,
    QuotaExceeded,
    RateLimited,
    UnknownCohort,
)
from keys.limits.quotas import Quota

ENTRY_POINTS = {"gateway.__main__", "gateway.wsgi"}


def _all_domain_errors() -> set[type[DomainError]]:
    # Import every module first, so a DomainError subclass defined anywhere is seen.
    for package in (keys, gateway):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            # Not the entry points: they run the CLI or build an app when imported.
            if ".migrations" not in info.name and info.name not in ENTRY_POINTS:
                importlib.import_module(info.name)
    found: set[type[DomainError]] = set()
    pending = [DomainError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            found.add(subclass)
            pending.append(subclass)
    return found


def test_every_domain_error_is_defined_in_keys_errors_and_has_a_status() -> None:
    every = _all_domain_errors()
    assert {cls.__module__ for cls in every} == {"keys.errors"}
    assert DomainError not in DOMAIN_STATUS
    for cls in every:
        assert any(base in DOMAIN_STATUS for base in cls.__mro__), cls
    # The tree in the module's docstring names every class.
    doc = errors.__doc__ or ""
    assert [cls.__name__ for cls in every if cls.__name__ not in doc] == []


def test_the_most_specific_entry_wins() -> None:
    assert domain_status(UnknownCohort("x", [])) == 400  # by InvalidInput
    assert domain_status(HoneytokenUsed("key_1", "tst_1", "hint", "active")) == 401
    assert domain_status(NotFound("gone")) == 404
    assert domain_status(Lockdown("locked")) == 503


def test_a_domain_error_without_a_line_is_a_logged_500_not_a_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unlisted(DomainError):
        code = "unlisted"

    with caplog.at_level(logging.ERROR, logger="drawbridge.errors"):
        try:
            raise Unlisted("no status for this one")
        except Unlisted as exc:
            error = api_error(exc)
    assert (error.status, error.code) == (500, "internal_error")
    assert "Unlisted" in caplog.text


def test_refusals_say_when_to_come_back() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    quota = Quota("generations_per_day", "2026-12-04", 5, 1, now + timedelta(hours=12))
    daily = api_error(QuotaExceeded(quota, 5, now))
    assert (daily.status, daily.code, daily.param) == (429, "quota_exceeded", quota.metric)
    assert daily.headers["Retry-After"] == str(12 * 3600)
    assert daily.headers["retry-after-ms"] == str(12 * 3600 * 1000)
    assert daily.headers["x-should-retry"] == "false"  # hours away: not worth a client's wait

    limited = api_error(RateLimited("slow down", limit=60, remaining=0, reset_in=12.5))
    assert (limited.status, limited.code) == (429, "rate_limit_exceeded")
    assert limited.headers["Retry-After"] == "13"
    assert limited.headers["x-ratelimit-limit-requests"] == "60"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-should-retry"] == "true"

    locked = api_error(Lockdown("locked"))
    assert (locked.status, locked.headers["Retry-After"]) == (503, "300")
    assert locked.headers["x-should-retry"] == "false"


def test_upstream_failures_keep_their_status_and_fields() -> None:
    passed_on = api_error(
        UpstreamError(400, "bad prompt", "moderation_blocked", param="prompt", error_type="x")
    )
    assert (passed_on.status, passed_on.code, passed_on.param, passed_on.error_type) == (
        400,
        "moderation_blocked",
        "prompt",
        "x",
    )
    assert passed_on.headers["x-should-retry"] == "false"
    timed_out = api_error(UpstreamUnanswered(504, "slow", "upstream_timeout"))
    assert (timed_out.status, timed_out.headers["x-should-retry"]) == (504, "true")


def test_invalid_input_keeps_its_code_and_param() -> None:
    error = api_error(InvalidInput("no", code="api_key_in_query", param="key"))
    assert (error.status, error.code, error.param) == (400, "api_key_in_query", "key")
