"""The fast path (gateway/fast_refusal.py) answers a blocked address exactly as Flask does.

The same hostile requests go through two apps on one process state, one with
``fast_refusals`` on and one with it off, and everything they produce is compared: status,
body bytes, every header in order, the access-log line, the ``/metrics`` counters and the
refusals counted in ``usage_refusals``. Only what differs by nature is left out: the
gateway's generated request ids, the log line's time and duration, where a latency falls in
the histogram (its count is compared), and the block's seconds-to-reset, which may tick
between the two requests (compared to within a second). Each case also says whether the
fast path must have answered it, so a fast path that silently stopped answering fails too.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.fast_refusal import FastRefusals
from gateway.observability import logs, metrics
from gateway.observability.logs import AccessLog, LineWriter, RedactingFilter
from gateway.state import GatewayState
from keys.access.keyformat import KeyFormat
from keys.access.lifecycle import IssuedKey
from keys.models import UsageEvent, UsageRefusal
from keys.store import Store
from tests.helpers import bearer

pytestmark = pytest.mark.both_databases

BLOCKING = {"auth_failures_per_minute": 3, "trusted_proxies": 1}
PROXY, FLOODER = "10.0.0.5", "198.51.100.7"
# Addresses not blocked (each fails once per app: below the limit of 3).
NEIGHBOUR, BEHIND_NEIGHBOUR = "198.51.100.8", "198.51.100.9"
MADE_UP = KeyFormat("drwb")
# The block's time to reset, read from the clock by each request.
TICKING = {"retry-after": 1, "retry-after-ms": 1000, "x-ratelimit-reset-requests": 1}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    fast: bool
    """Whether the fast path must answer it (else Flask does, in both apps)."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def from_flooder(**extra: str) -> dict[str, str]:
    return {"X-Forwarded-For": FLOODER, **extra}


def cases(good: IssuedKey, revoked: IssuedKey) -> list[Case]:
    guess = MADE_UP.generate()
    return [
        Case("no key", "GET", "/v1/videos/video_123", from_flooder(), True),
        Case("a made-up key", "GET", "/v1/videos/video_123", from_flooder(**bearer(guess)), True),
        Case("the revoked key", "GET", "/v1/me", from_flooder(**bearer(revoked.secret)), True),
        Case("not Bearer", "GET", "/v1/videos", from_flooder(Authorization="Basic eDp5"), True),
        Case(
            "bearer, spaced",
            "GET",
            "/v1/me",
            from_flooder(Authorization=f"bearer   {guess} "),
            True,
        ),
        Case(
            "a create with a body",
            "POST",
            "/v1/videos",
            from_flooder(**bearer(guess)),
            True,
            {"json": {"prompt": "a cat", "model": "sora-2"}},
        ),
        Case("a delete", "DELETE", "/v1/videos/video_1", from_flooder(), True),
        Case("a share", "POST", "/v1/videos/video_1/share", from_flooder(), True),
        Case("bind a proof key", "POST", "/v1/me/proof-keys", from_flooder(), True),
        Case("content", "GET", "/v1/videos/video_1/content", from_flooder(), True),
        Case(
            "its own request id",
            "GET",
            "/v1/me",
            from_flooder(**{"X-Request-Id": "trace-1.a:b"}),
            True,
        ),
        Case("a bad request id", "GET", "/v1/me", from_flooder(**{"X-Request-Id": "a b\tc"}), True),
        Case(
            "a long request id", "GET", "/v1/me", from_flooder(**{"X-Request-Id": "x" * 129}), True
        ),
        Case(
            "a key in the user agent", "GET", "/v1/me", from_flooder(**{"User-Agent": guess}), True
        ),
        # Refused first by something else, or not a request the block decides: Flask's.
        Case(
            "a spoofed hop",
            "GET",
            "/v1/me",
            {"X-Forwarded-For": f"{FLOODER}, {BEHIND_NEIGHBOUR}"},
            False,
        ),
        Case("the verified key", "GET", "/v1/me", from_flooder(**bearer(good.secret)), False),
        Case("a query", "GET", "/v1/videos?limit=2", from_flooder(), False),
        Case("a key in the query", "GET", f"/v1/videos?api_key={guess}", from_flooder(), False),
        Case("a control byte", "GET", "/v1/videos?after=%00", from_flooder(), False),
        Case("a traversal", "GET", "/v1/videos/a/../b", from_flooder(), False),
        Case(
            "an encoded slash",
            "GET",
            "/v1/videos/a/../b",
            from_flooder(),
            False,
            {"environ_overrides": {"RAW_URI": "/v1/videos/a%2f..%2fb"}},
        ),
        Case("a doubled slash", "GET", "/v1//videos", from_flooder(), False),
        Case("not ASCII", "GET", "/v1/videos/vid\u00e9o", from_flooder(), False),
        Case("HEAD", "HEAD", "/v1/videos/video_1", from_flooder(), False),
        Case("OPTIONS", "OPTIONS", "/v1/videos", from_flooder(), False),
        Case("PUT", "PUT", "/v1/videos/video_1", from_flooder(), False),
        Case("no such route", "GET", "/v1/nothing", from_flooder(), False),
        Case("a share link", "GET", "/s/sometoken", from_flooder(), False),
        Case("the admin API", "GET", "/admin/v1/keys", from_flooder(), False),
        Case("health", "GET", "/healthz", from_flooder(), False),
        Case("another address", "GET", "/v1/me", {"X-Forwarded-For": NEIGHBOUR}, False),
        Case(
            "chunked",
            "POST",
            "/v1/videos",
            from_flooder(**{"Transfer-Encoding": "chunked", "Content-Type": "application/json"}),
            False,
            {"input_stream": io.BytesIO(b"2\r\n{}\r\n0\r\n\r\n")},
        ),
    ]


# -- what one request produced -----------------------------------------------------------


def fast_path_of(app: Flask) -> FastRefusals | None:
    wsgi: Any = app.wsgi_app
    while wsgi is not None and not isinstance(wsgi, FastRefusals):
        wsgi = getattr(wsgi, "app", None)
    return wsgi


def counters(app: Flask) -> tuple[dict[Any, float], dict[Any, int]]:
    snapshot = app.extensions[metrics.EXTENSION].snapshot()
    return (
        {(name, tuple(map(tuple, labels))): value for name, labels, value in snapshot["counters"]},
        {
            (name, tuple(map(tuple, labels))): sum(counts)
            for name, labels, counts, _total in snapshot["histograms"]
        },
    )


def refusal_rows(store: Store) -> dict[tuple[Any, ...], int]:
    with store.read() as tx:
        rows = tx.session.scalars(select(UsageRefusal)).all()
        return {
            (r.day, r.key_id, r.error_code, r.status, r.method, r.route, r.client_ip): r.requests
            for r in rows
        }


def event_count(store: Store) -> int:
    with store.read() as tx:
        return int(tx.session.execute(select(func.count()).select_from(UsageEvent)).scalar_one())


def grown(before: dict[Any, Any], after: dict[Any, Any]) -> dict[Any, Any]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def request_id_of(value: str, sent: str | None) -> str:
    return "<generated>" if value.startswith("req_") and value != sent else value


def observe(
    app: Flask, state: GatewayState, log: AccessLines, case: Case
) -> tuple[dict[str, Any], int]:
    """Everything ``case`` produced through ``app``, and how many the fast path answered."""
    fast_path = fast_path_of(app)
    answered = fast_path.answered if fast_path else 0
    counted, histograms = counters(app)
    state.usage.flush()  # what came before (the block's own failures) is not this case's
    refusals, events = refusal_rows(state.store), event_count(state.store)
    log.writer.flush()
    log_at = len(log.stream.getvalue())

    response = app.test_client().open(
        case.path,
        method=case.method,
        headers=case.headers,
        environ_base={"REMOTE_ADDR": PROXY},
        **case.options,
    )
    body = response.get_data()
    log.writer.flush()
    state.usage.flush()

    sent_id = case.headers.get("X-Request-Id")
    headers = [
        (name, request_id_of(value, sent_id) if name == "X-Request-Id" else value)
        for name, value in response.headers.items()
    ]
    lines = [json.loads(line) for line in log.stream.getvalue()[log_at:].splitlines()]
    for line in lines:
        for field in ("time", "duration_ms"):
            line.pop(field)
        for field in ("request_id", "gateway_request_id"):
            if line[field] is not None:
                line[field] = request_id_of(line[field], sent_id)
    counted_after, histograms_after = counters(app)
    seen = {
        "status": response.status,
        "body": body,
        "headers": headers,
        "access_log": lines,
        "metrics": grown(counted, counted_after),
        "latencies_observed": grown(histograms, histograms_after),
        "usage_refusals": grown(refusals, refusal_rows(state.store)),
        "usage_events": event_count(state.store) - events,
    }
    return seen, (fast_path.answered if fast_path else 0) - answered


def assert_same(flask_seen: dict[str, Any], fast_seen: dict[str, Any]) -> None:
    def ticking(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(n, "<ticks>" if n.lower() in TICKING else v) for n, v in headers]

    remaining = "x-ratelimit-remaining-requests"
    flask_headers, fast_headers = dict(flask_seen["headers"]), dict(fast_seen["headers"])
    if fast_seen["status"].startswith("200") and remaining in fast_headers:
        # An admitted key's second request (the fast app's) has one request less remaining.
        assert int(fast_headers[remaining]) == int(flask_headers[remaining]) - 1
        fast_seen = {
            **fast_seen,
            "headers": [
                (n, flask_headers[remaining] if n == remaining else v)
                for n, v in fast_seen["headers"]
            ],
        }

    assert ticking(fast_seen["headers"]) == ticking(flask_seen["headers"])
    for (name, fast_value), (_, flask_value) in zip(
        fast_seen["headers"], flask_seen["headers"], strict=True
    ):
        if name.lower() in TICKING:
            seconds = [int(v.removesuffix("s").replace("m", "")) for v in (fast_value, flask_value)]
            if name.lower() == "x-ratelimit-reset-requests":
                seconds = [_reset_seconds(v) for v in (fast_value, flask_value)]
            assert abs(seconds[0] - seconds[1]) <= TICKING[name.lower()], name
    for field in ("status", "body", "access_log", "metrics", "latencies_observed"):
        assert fast_seen[field] == flask_seen[field], field
    assert fast_seen["usage_refusals"] == flask_seen["usage_refusals"]
    assert fast_seen["usage_events"] == flask_seen["usage_events"]


def _reset_seconds(text: str) -> int:
    minutes, _, seconds = text.removesuffix("s").rpartition("m")
    return int(minutes or 0) * 60 + int(seconds)


# -- the comparison ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AccessLines:
    writer: LineWriter
    stream: io.StringIO


@pytest.fixture
def apps(state: GatewayState, monkeypatch: pytest.MonkeyPatch) -> tuple[Flask, Flask, AccessLines]:
    """Flask alone, and the fast path in front of Flask, on one process state (one block,
    one usage buffer, one database); their access lines go to one stream."""
    flask_only = create_app(
        state=dataclasses.replace(
            state, settings=dataclasses.replace(state.settings, fast_refusals=False)
        )
    )
    fast = create_app(state=state)
    for app in (flask_only, fast):
        app.testing = True
    assert fast_path_of(flask_only) is None and fast_path_of(fast) is not None
    stream = io.StringIO()
    writer = LineWriter(stream, 3600, RedactingFilter([state.store.key_format.embedded], []))
    monkeypatch.setattr(logs, "_access_log", AccessLog(writer))
    return flask_only, fast, AccessLines(writer, stream)


def block(app: Flask, state: GatewayState, address: str) -> None:
    """Fail sign-in from ``address`` until this process holds it blocked."""
    while not state.limits.held_blocked(address):
        app.test_client().get(
            "/v1/me",
            headers={"X-Forwarded-For": address, **bearer(MADE_UP.generate())},
            environ_base={"REMOTE_ADDR": PROXY},
        )


@pytest.mark.parametrize("settings_overrides", [BLOCKING])
def test_the_fast_path_answers_every_hostile_request_as_flask_does(
    apps: tuple[Flask, Flask, AccessLines],
    state: GatewayState,
    store: Store,
    key: IssuedKey,
    make_key: Callable[..., IssuedKey],
) -> None:
    flask_only, fast, log = apps
    revoked = make_key()
    with store.transaction() as tx:
        tx.keys.revoke(revoked.key.id, "test", "published in a gist")
    verified = fast.test_client().get(
        "/v1/me", headers=from_flooder(**bearer(key.secret)), environ_base={"REMOTE_ADDR": PROXY}
    )
    assert verified.status_code == 200

    for case in cases(key, revoked):
        block(flask_only, state, FLOODER)
        flask_seen, flask_answered = observe(flask_only, state, log, case)
        block(flask_only, state, FLOODER)
        fast_seen, fast_answered = observe(fast, state, log, case)
        assert (case.name, fast_answered) == (case.name, int(case.fast))
        assert flask_answered == 0
        try:
            assert_same(flask_seen, fast_seen)
        except AssertionError as exc:
            raise AssertionError(
                f"{case.name}: {exc}\nflask: {flask_seen}\nfast: {fast_seen}"
            ) from None


@pytest.mark.parametrize("settings_overrides", [BLOCKING])
def test_what_the_fast_path_answers_is_the_block_counted_and_logged(
    apps: tuple[Flask, Flask, AccessLines], state: GatewayState, store: Store
) -> None:
    """Not only the same as Flask: what the block must be (a 429 counted, never an event)."""
    _, fast, log = apps
    block(fast, state, FLOODER)
    seen, answered = observe(
        fast, state, log, Case("no key", "GET", "/v1/videos/video_9", from_flooder(), True)
    )
    assert answered == 1 and seen["status"] == "429 TOO MANY REQUESTS"
    error = json.loads(seen["body"])["error"]
    assert error["code"] == "too_many_failed_attempts" and error["type"] == "rate_limit_error"
    headers = dict(seen["headers"])
    assert headers["x-should-retry"] == "true" and headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == "<generated>"
    assert [(line["status"], line["path"]) for line in seen["access_log"]] == [
        (429, "/v1/videos/video_9")
    ]
    assert seen["usage_events"] == 0
    ((_day, key_id, code, status, method, route, address), count) = next(
        iter(seen["usage_refusals"].items())
    )
    assert (key_id, code, status, method, route, address, count) == (
        "",
        "too_many_failed_attempts",
        429,
        "GET",
        "/v1/videos/<video_id>",
        "",
        1,
    )
    requests_counted = {k: v for k, v in seen["metrics"].items() if k[0] == metrics.REQUESTS}
    assert requests_counted == {
        (
            metrics.REQUESTS,
            (("route", "/v1/videos/<video_id>"), ("method", "GET"), ("status", "429")),
        ): 1
    }
