"""Where the gateway's time goes on ``GET /v1/videos/{id}``: ``python -m bench.profile``.

Two views, both against a real simulator process and a fresh database (bench/harness.py):

``pieces`` (default) builds the gateway and the bare passthrough in this process and drives
them through their WSGI interface, one request after another, with ``perf_counter`` timers
wrapped around the pieces of a request (the database sessions, the key verification, the
upstream call, the HTTP client underneath it, the request hooks, the access-log record). It
prints the mean microseconds per request of each piece and what is left for Flask/werkzeug
and the views, next to the passthrough's total, plus floors measured alone: an empty read
transaction, raw sqlite3 indexed lookups, one access-log record.

``cprofile`` runs the gateway under gunicorn exactly as the benchmarks do, with
``BENCH_PROFILE`` set (bench/serve.py): after a warm-up it profiles ``--requests`` sequential
GETs inside the worker and prints the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import io
import pstats
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.harness import (
    HOST,
    Stack,
    command_line,
    install_watchdog,
    machine_facts,
    setting_pairs,
)

_spent: dict[str, float] = defaultdict(float)
_calls: dict[str, int] = defaultdict(int)
_main_thread = threading.main_thread()


def _count(label: str, started: float) -> None:
    # Only the request's own thread: a background thread's work (the usage flusher, the rate
    # limiter's expiry timer) overlaps requests rather than adding to them.
    if threading.current_thread() is _main_thread:
        _spent[label] += time.perf_counter() - started
        _calls[label] += 1


def _timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _count(label, started)

    return wrapper


def _patch(owner: Any, name: str, label: str) -> bool:
    original = getattr(owner, name, None)
    if original is None:
        return False
    setattr(owner, name, _timed(label, original))
    return True


# Pieces of a gateway request; top-level rows do not overlap, "of which" rows are nested in
# the top-level row above them. Rows for code that does not exist (yet) are left out.
PIECES = [
    ("db session (read)", "one ORM session + transaction, including the queries in it"),
    ("  of which KeyService.verify", "digest + the verify query"),
    ("  of which VideoLedger.owned", "the ownership read"),
    ("db session (write)", "write transactions in the request (touch, ledger refresh)"),
    ("rate limits", "RateLimits.refuse_blocked_client + admit_key"),
    ("upstream call_json", "UpstreamClient.call_json"),
    ("  of which requests.Session.request", "the HTTP exchange with the simulator"),
    ("before_request hook", "gateway.app._start_request (request id, path checks)"),
    ("after_request hook", "gateway.app._finish_request (headers, usage, access log)"),
    ("  of which usage record", "gateway.tester.usage_event.record_usage"),
    ("  of which access log", "the access line: JSON, redaction, queued for the writer"),
    ("threads started", "threading.Thread.start calls (count, not time)"),
]


def _instrument() -> None:
    import requests

    import gateway.app
    import keys.access.lifecycle
    import keys.db
    import keys.generations.videos

    original_session = keys.db.Database.session

    @contextlib.contextmanager
    def session(self: Any, *, write: bool) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            with original_session(self, write=write) as value:
                yield value
        finally:
            _count("db session (write)" if write else "db session (read)", started)

    keys.db.Database.session = session  # type: ignore[method-assign,assignment]
    _patch(keys.access.lifecycle.KeyService, "verify", "  of which KeyService.verify")
    _patch(keys.generations.videos.VideoLedger, "owned", "  of which VideoLedger.owned")
    _patch(keys.generations.videos.VideoLedger, "is_owned", "  of which VideoLedger.owned")
    import gateway.upstream.client

    _patch(gateway.upstream.client.UpstreamClient, "call_json", "upstream call_json")
    _patch(requests.Session, "request", "  of which requests.Session.request")
    _patch(gateway.app, "_start_request", "before_request hook")
    _patch(gateway.app, "_finish_request", "after_request hook")
    with contextlib.suppress(ImportError):
        import gateway.admission.limits

        _patch(gateway.admission.limits.RateLimits, "admit_key", "rate limits")
        _patch(gateway.admission.limits.RateLimits, "refuse_blocked_client", "rate limits")
    with contextlib.suppress(ImportError):
        import gateway.tester.usage_event

        _patch(gateway.tester.usage_event, "record_usage", "  of which usage record")
        # _finish_request calls it through its own module's name.
        _patch(gateway.app, "record_usage", "  of which usage record")
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        _count("threads started", time.perf_counter())
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]


def _instrument_log_handler() -> None:
    from gateway.observability import logs

    logs.AccessLog.write = _timed("  of which access log", logs.AccessLog.write)  # type: ignore[method-assign]


def wsgi_get(app: Any, path: str, headers: dict[str, str]) -> tuple[float, int]:
    """One GET through a WSGI app, its body read: seconds taken and the status."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, headers=headers, base_url=f"http://{HOST}").get_environ()
    environ["RAW_URI"] = path
    status: list[str] = []

    def start_response(code: str, _headers: Any, _exc: Any = None) -> Any:
        status.append(code)
        return lambda _data: None

    started = time.perf_counter()
    result = app(environ, start_response)
    try:
        for _chunk in result:
            pass
    finally:
        if hasattr(result, "close"):
            result.close()
    return time.perf_counter() - started, int(status[0].split()[0])


def _drive(app: Any, path: str, headers: dict[str, str], warmup: int, requests: int) -> list[float]:
    for _ in range(warmup):
        wsgi_get(app, path, headers)
    _spent.clear()
    _calls.clear()
    totals = []
    for _ in range(requests):
        elapsed, status = wsgi_get(app, path, headers)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        totals.append(elapsed)
    return totals


def _floor(function: Callable[[], Any], repeat: int) -> float:
    for _ in range(min(repeat, 100)):
        function()
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat * 1e6


def pieces(stack: Stack, args: argparse.Namespace) -> None:
    from bench.passthrough import create_passthrough_app
    from gateway.app import create_app
    from gateway.settings import load_settings

    path = f"/v1/videos/{stack.video_id}"
    upstream_path = f"/v1/videos/{stack.upstream_video_id}"
    log_file = (stack.directory / "in-process-gateway.log").open("w")
    real_stderr, sys.stderr = sys.stderr, log_file  # the access log goes to a file, as in prod
    try:
        _instrument()
        app = create_app(load_settings(environ=stack.settings_env))
        _instrument_log_handler()
    finally:
        sys.stderr = real_stderr
    passthrough = create_passthrough_app(stack.simulator.url + "/v1", stack.master_key)
    gateway_headers = {"Authorization": f"Bearer {stack.tester_key}"}

    # Interleave short batches so drift on a noisy machine hits both alike.
    gateway_totals: list[float] = []
    passthrough_totals: list[float] = []
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    batch = max(1, args.requests // 10)
    for index in range(10):
        warmup = args.warmup if not index else 0
        passthrough_totals += _drive(passthrough, upstream_path, {}, warmup, batch)
        pass_upstream = _spent.get("  of which requests.Session.request", 0.0)
        spent["passthrough requests.Session.request"] += pass_upstream
        gateway_totals += _drive(app, path, gateway_headers, warmup, batch)
        for label, value in _spent.items():
            spent[label] += value
            calls[label] += _calls[label]
    requests_done = len(gateway_totals)

    gateway_mean = statistics.fmean(gateway_totals) * 1e6
    passthrough_mean = statistics.fmean(passthrough_totals) * 1e6
    print(f"\nIn-process WSGI, {requests_done} sequential GET {path} each (mean us per request)")
    print(f"{'piece':<40} {'calls/req':>9} {'us/req':>9} {'share':>7}")
    print("-" * 68)
    print(f"{'gateway total (WSGI call + body)':<40} {'':>9} {gateway_mean:9.0f} {'100%':>7}")
    accounted = 0.0
    for label, _meaning in PIECES:
        if label not in spent:
            continue
        per_request = calls[label] / requests_done
        if label == "threads started":
            print(f"{label:<40} {per_request:9.2f}")
            continue
        value = spent[label] / requests_done * 1e6
        if not label.startswith("  "):
            accounted += value
        print(f"{label:<40} {per_request:9.2f} {value:9.0f} {value / gateway_mean:7.0%}")
    rest = gateway_mean - accounted
    label = "rest: Flask/werkzeug, auth glue, views"
    print(f"{label:<40} {'':>9} {rest:9.0f} {rest / gateway_mean:7.0%}")
    upstream_pass = spent["passthrough requests.Session.request"] / len(passthrough_totals) * 1e6
    print()
    print(f"{'passthrough total (WSGI call + body)':<40} {'':>9} {passthrough_mean:9.0f}")
    print(f"{'  of which requests.Session.request':<40} {'':>9} {upstream_pass:9.0f}")
    print(
        f"\ngateway - passthrough, mean: {gateway_mean - passthrough_mean:+.0f} us; medians: "
        f"gateway {statistics.median(gateway_totals) * 1e6:.0f} us, passthrough "
        f"{statistics.median(passthrough_totals) * 1e6:.0f} us"
    )
    _print_floors(app, stack)


def _print_floors(app: Any, stack: Stack) -> None:
    import sqlite3

    from gateway.http.current import EXTENSION

    state = app.extensions[EXTENSION]
    store = state.store
    print("\nFloors, measured alone (us per call):")

    def empty_read() -> None:
        with store.read():
            pass

    print(f"  empty read transaction (store.read())     {_floor(empty_read, 2000):8.1f}")
    tester_id = ""

    def verify_read() -> None:
        nonlocal tester_id
        with store.read() as tx:
            tester_id = tx.keys.verify(stack.tester_key).tester_id

    print(f"  read transaction + KeyService.verify       {_floor(verify_read, 2000):8.1f}")

    def owned_read() -> None:
        with store.read() as tx:
            tx.videos.owned(stack.video_id, tester_id)

    print(f"  read transaction + VideoLedger.owned       {_floor(owned_read, 2000):8.1f}")

    def merged_read() -> None:
        with store.read() as tx:
            principal = tx.keys.verify(stack.tester_key)
            tx.videos.owned(stack.video_id, principal.tester_id)

    print(f"  ONE read transaction with both             {_floor(merged_read, 2000):8.1f}")
    import keys.access.lifecycle

    verify_query = getattr(keys.access.lifecycle, "_VERIFY", None)
    if verify_query is not None:
        digest = store.digester.digest(stack.tester_key)

        def core_verify() -> None:
            with store.database.engine.connect() as connection:
                connection.execute(verify_query, {"digest": digest}).first()

        print(f"  the verify SELECT on a Core connection     {_floor(core_verify, 2000):8.1f}")
    if stack.database.startswith("sqlite:///"):
        connection = sqlite3.connect(stack.database.removeprefix("sqlite:///"))
        digest = store.digester.digest(stack.tester_key)

        def raw_lookups() -> None:
            connection.execute("SELECT * FROM api_keys WHERE digest = ?", (digest,)).fetchall()
            connection.execute(
                "SELECT tester_id FROM videos WHERE id = ?", (stack.video_id,)
            ).fetchall()

        print(f"  two raw sqlite3 indexed lookups            {_floor(raw_lookups, 5000):8.1f}")
        connection.close()
    print(
        "  SecretDigester.digest (HMAC-SHA256)        "
        f"{_floor(lambda: store.digester.digest(stack.tester_key), 20000):8.1f}"
    )
    # The request thread queues the record; the writer thread renders, redacts and writes.
    # Point a writer at memory so the measured lines do not flood the terminal.
    from gateway.observability import logs

    redactor = logs.RedactingFilter([store.key_format.embedded, store.token_format.embedded], [])
    writer = logs.LineWriter(io.StringIO(), interval=3600, redactor=redactor)
    access = logs.AccessLog(writer)
    fields = {
        "request_id": "req_" + "0" * 32,
        "method": "GET",
        "path": "/v1/videos/video_0123456789abcdef01234567",
        "status": 200,
        "duration_ms": 1.23,
        "key_id": "key_0123456789abcdef",
        "operator": None,
    }
    writer.flush()
    cost = _floor(lambda: access.write(fields), 5000)
    started = time.perf_counter()
    writer.flush()
    rendered = (time.perf_counter() - started) / 5100 * 1e6
    writer.stop()
    print(f"  one access-log record, queued (request)    {cost:8.1f}")
    print(f"  ... rendered and redacted (writer thread)  {rendered:8.1f}")
    _print_limiter_floors(state)


def _print_limiter_floors(state: Any) -> None:
    """The rate limiter's cost with requests back to back and 20 ms apart."""
    limits = getattr(state, "limits", None)
    if limits is None:
        return
    from keys.limits.policies import Policy

    policy = Policy(requests_per_minute=10**9, requests_per_day=10**9)
    started_threads = 0
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        nonlocal started_threads
        started_threads += 1
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]
    try:
        for gap in (0.0, 0.02):
            started_threads = 0
            timings = []
            for _ in range(300):
                began = time.perf_counter()
                limits.refuse_blocked_client("192.0.2.1")
                limits.admit_key("key_floor", policy)
                timings.append((time.perf_counter() - began) * 1e6)
                if gap:
                    time.sleep(gap)
            print(
                f"  rate limits, calls {gap * 1000:2.0f} ms apart: median "
                f"{statistics.median(timings):6.0f}, mean {statistics.fmean(timings):6.0f}; "
                f"threads started per call {started_threads / len(timings):.2f}"
            )
    finally:
        threading.Thread.start = original_start  # type: ignore[method-assign]


def cprofile(stack: Stack, args: argparse.Namespace, prefix: str) -> None:
    path = f"/v1/videos/{stack.video_id}"
    headers = {"Authorization": f"Bearer {stack.tester_key}"}
    connection = http.client.HTTPConnection(HOST, stack.gateway.port, timeout=30)

    def get(target: str, with_headers: dict[str, str]) -> bytes:
        connection.request("GET", target, headers=with_headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {target} answered {response.status}: {body[:300]!r}")
        return body

    for _ in range(args.warmup):
        get(path, headers)
    get("/_bench/profile?reset=1", {})
    started = time.perf_counter()
    for _ in range(args.requests):
        get(path, headers)
    elapsed = time.perf_counter() - started
    stats_file = get("/_bench/profile", {}).decode()
    connection.close()
    print(
        f"\n{args.requests} profiled requests in {elapsed:.2f}s "
        f"({elapsed / args.requests * 1e3:.2f} ms each under cProfile); stats: {stats_file}"
    )
    stats = pstats.Stats(stats_file)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"profiled time per request: {total / args.requests * 1e6:.0f} us")
    for order in ("tottime", "cumulative"):
        print(f"\n--- top {args.top} by {order} ---")
        stats.sort_stats(order).print_stats(args.top)
    if args.out:
        Path(args.out).write_bytes(Path(stats_file).read_bytes())
        print(f"stats copied to {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("mode", nargs="?", choices=("pieces", "cprofile"), default="pieces")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--top", type=int, default=30, help="cprofile: rows to print")
    parser.add_argument("--out", default=None, help="cprofile: copy the .prof file here")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    parser.add_argument(
        "--patch",
        default="",
        metavar="NAMES",
        help="EXPERIMENT: apply bench/serve.py patches (in-process for pieces, to the worker "
        "for cprofile)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="DRAWBRIDGE_NAME=VALUE",
        help="extra gateway setting (repeatable), e.g. DRAWBRIDGE_REDIS_URL=redis://127.0.0.1/9",
    )
    args = parser.parse_args(argv)
    install_watchdog(600)
    facts = machine_facts()
    print(f"command: {command_line()}")
    print(f"machine: nproc={facts['nproc']}, Python {facts['python']}, code {facts['code']}")
    with contextlib.ExitStack() as cleanup:
        server_env = {}
        prefix = ""
        if args.mode == "cprofile":
            import tempfile

            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-prof-"))
            prefix = f"{directory}/gateway"
            server_env["BENCH_PROFILE"] = prefix
        if args.patch:
            print(f"EXPERIMENT: patched with {args.patch} (bench/serve.py)")
            if args.mode == "pieces":
                from bench.serve import apply_patches

                apply_patches(args.patch)
            else:
                server_env["BENCH_PATCH"] = args.patch
        stack = cleanup.enter_context(
            Stack(
                database_url=args.database_url,
                with_passthrough=False,
                server_env=server_env,
                gateway_env=setting_pairs(args.gateway_env),
            )
        )
        if args.mode == "pieces":
            pieces(stack, args)
        else:
            cprofile(stack, args, prefix)


if __name__ == "__main__":
    main()
