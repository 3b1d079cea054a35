"""Serve the gateway or the bare passthrough under gunicorn with identical server settings.

Both go through ``gateway.process.server.serve``, the call ``drawbridge serve`` makes, with the same
bind/workers/threads, so the only difference between them is the application::

    python -m bench.serve gateway --bind 127.0.0.1:8080 --workers 1 --threads 8
    python -m bench.serve passthrough --bind 127.0.0.1:8081 --workers 1 --threads 8

The gateway reads its settings from ``DRAWBRIDGE_*`` variables like ``drawbridge serve``; the
passthrough reads ``BENCH_UPSTREAM_URL`` and ``BENCH_UPSTREAM_API_KEY``.

``--server granian`` serves the same application under granian's WSGI interface instead (a
measurement only, issue 22 goal 4; granian is the ``bench`` extra, ``make bench-tools``): one
granian worker process per ``--workers``, ``--threads`` Python threads running the
application in it (granian's ``blocking_threads``, gthread's threads) and one Rust I/O thread
(``runtime_threads``, gthread's accepting main thread). None of gunicorn's settings or hooks
carry over: granian's own defaults, its own plain-text log lines, its own answers to
requests it cannot parse, and no ``worker_exit`` flush; nor does atexit run in a granian
worker (a ``multiprocessing`` child leaves with ``os._exit``), so the usage events still
buffered when it stops are lost (docs/benchmarks.md, "granian measured against gunicorn").

``BENCH_PROFILE=/path/prefix`` wraps the application in a cProfile middleware (requests are
serialised under a lock while profiled, so use it with sequential traffic only). A ``GET
/_bench/profile`` writes the worker's stats to ``<prefix>.<pid>.prof`` and answers with the
file name (``?reset=1`` discards what was collected instead, e.g. after a warm-up); the stats
are also written when the worker exits. ``python -m bench.profile cprofile`` drives it.

``BENCH_PATCH`` applies experiments to the served process, to measure a proposed fix before
anyone changes product code (comma-separated names):

* ``limiter-timer``: flask-limiter's ``memory://`` storage (the ``limits`` package) starts a
  new 10 ms ``threading.Timer`` whenever the previous one has finished, i.e. a thread per
  request at moderate rates; replace that with one daemon thread sweeping once a second
  (reads already expire stale windows lazily, so limits behave the same);
* ``stream-1mib``: content downloads read the upstream in 1 MiB chunks instead of 256 KiB
  (``gateway.upstream.client.STREAM_CHUNK_BYTES``);
* ``no-gc-freeze``, ``core-usage-insert``, ``limits-storage-calls``: undo one change of
  issue 22's third session each (the worker's heap frozen once the app is built; the usage
  flusher's batch by the driver, an executemany on SQLite and a COPY on PostgreSQL; a key's
  rate-limit windows counted in one step), to measure
  it against the code without it in one run (``bench.proxy --compare-patch``);
* ``no-door``: every request through gthread's thread pool, a blocked address's refusals
  too (gateway/process/door.py undone; ``bench.flood --compare-door``).
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from gateway.process.server import serve

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

PROFILE_PATH = "/_bench/profile"


class ProfilingMiddleware:
    """Profile every request (including its body iteration) in one cProfile.Profile."""

    def __init__(self, app: WSGIApp, prefix: str) -> None:
        self._app = app
        self._prefix = prefix
        self._profile = cProfile.Profile()
        self._lock = threading.Lock()
        atexit.register(self.dump)

    def dump(self) -> str:
        path = f"{self._prefix}.{os.getpid()}.prof"
        with self._lock:
            self._profile.dump_stats(path)
        return path

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PROFILE_PATH:
            if "reset=1" in environ.get("QUERY_STRING", ""):
                with self._lock:
                    self._profile = cProfile.Profile()
                answer = b"reset"
            else:
                answer = self.dump().encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [answer]
        with self._lock:
            self._profile.enable()
            try:
                result = self._app(environ, start_response)
                body = list(result)  # sequential JSON traffic only: bodies are small
                if hasattr(result, "close"):
                    result.close()
            finally:
                self._profile.disable()
        return body


def _patch_limiter_timer() -> None:
    from limits.storage.memory import MemoryStorage

    def schedule_expiry(self: Any) -> None:
        if getattr(self, "_bench_sweeper", None) is None:

            def sweep() -> None:
                while True:
                    time.sleep(1.0)
                    self._MemoryStorage__expire_events()

            self._bench_sweeper = threading.Thread(target=sweep, name="bench-sweeper", daemon=True)
            self._bench_sweeper.start()

    MemoryStorage._MemoryStorage__schedule_expiry = schedule_expiry  # type: ignore[attr-defined]


def _patch_stream_1mib() -> None:
    import gateway.upstream.client

    gateway.upstream.client.STREAM_CHUNK_BYTES = 1024 * 1024  # read at call time by _chunks


def _patch_no_reuse() -> None:
    import keys.db

    # The hot read as it was before rows were reused: a database read on every request.
    keys.db.Database.change_signal = property(lambda self: None)  # type: ignore[assignment,method-assign]


def _patch_no_gc_freeze() -> None:
    import gateway.process.server

    # The worker's heap as it was before it was frozen once the app is built.
    gateway.process.server.settle_heap = lambda: None


def _patch_core_usage_insert() -> None:
    import keys.records.usage
    from keys.records.usage import _INSERT_EVENT

    class CoreInsert:
        def execute(self, connection: Any, rows: list[dict[str, Any]]) -> None:
            connection.execute(_INSERT_EVENT, rows)

    # The usage flusher's batch as a Core executemany, as before keys.db.PreparedInsert.
    keys.records.usage._INSERT_EVENTS = CoreInsert()  # type: ignore[assignment]


def _patch_no_door() -> None:
    from gunicorn.workers.gthread import ThreadWorker

    import gateway.process.worker

    # Every request through the thread pool, as before the door (gateway/process/door.py).
    gateway.process.worker.GatewayWorker.wait_for_and_dispatch_events = (  # type: ignore[method-assign]
        ThreadWorker.wait_for_and_dispatch_events
    )


def _patch_limits_storage_calls() -> None:
    import gateway.admission.limits
    from gateway.admission.rate_storage import LazyMemoryStorage

    # A key's windows counted through limits' storage calls, as before count_windows.
    def count_windows(self: Any, windows: list[tuple[str, int, int]]) -> list[tuple[int, float]]:
        counts = []
        for key, expiry, allowed in windows:
            count = self.incr(key, expiry)
            counts.append((count, self.get_expiry(key) - time.time()))
            if count > allowed:
                break
        return counts

    LazyMemoryStorage.count_windows = count_windows  # type: ignore[method-assign]
    gateway.admission.limits._window_key = lambda item, key_id: item.key_for("key", key_id)


PATCHES: dict[str, Callable[[], None]] = {
    "limiter-timer": _patch_limiter_timer,
    "stream-1mib": _patch_stream_1mib,
    "no-reuse": _patch_no_reuse,
    "no-gc-freeze": _patch_no_gc_freeze,
    "core-usage-insert": _patch_core_usage_insert,
    "limits-storage-calls": _patch_limits_storage_calls,
    "no-door": _patch_no_door,
}


def apply_patches(names: str) -> list[str]:
    applied = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in PATCHES:
            raise SystemExit(f"BENCH_PATCH: unknown experiment {name!r}; known: {sorted(PATCHES)}")
        PATCHES[name]()
        applied.append(name)
    return applied


def gateway_app() -> Flask:
    from gateway.app import create_app
    from gateway.settings import load_settings

    return create_app(load_settings())


def passthrough_app() -> Flask:
    from bench.passthrough import app_from_env

    return app_from_env()


FACTORIES: dict[str, Callable[[], Flask]] = {"gateway": gateway_app, "passthrough": passthrough_app}


def _factory(name: str) -> Callable[[], Flask]:
    build = FACTORIES[name]
    prefix = os.environ.get("BENCH_PROFILE")
    if not prefix:
        return build

    def profiled() -> Flask:
        app = build()
        app.wsgi_app = ProfilingMiddleware(app.wsgi_app, prefix)  # type: ignore[method-assign]
        return app

    return profiled


def serve_granian(
    factory: Callable[[], Flask], *, name: str, bind: str, workers: int, threads: int
) -> None:
    """Run granian (WSGI) in the foreground until it is stopped, on ``factory``'s app.

    granian forks its workers (Linux, Python 3.11), so the factory is called in each worker,
    as gunicorn's ``load`` is; the target string only names it in granian's log."""
    try:
        from granian.constants import Interfaces
        from granian.server import Server
    except ImportError as missing:
        raise SystemExit(
            "bench.serve --server granian: granian is not installed (make bench-tools)"
        ) from missing
    host, _, port = bind.rpartition(":")
    server = Server(
        f"bench.serve:{name}",
        address=host,
        port=int(port),
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        runtime_threads=1,
    )
    server.serve(target_loader=factory, wrap_loader=False)


SERVERS = ("gunicorn", "granian")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("app", choices=sorted(FACTORIES))
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--server", choices=SERVERS, default="gunicorn")
    args = parser.parse_args(argv)
    applied = apply_patches(os.environ.get("BENCH_PATCH", ""))
    if applied:
        print(f"bench.serve: experiments applied: {', '.join(applied)}", flush=True)
    factory = _factory(args.app)
    if args.server == "granian":
        serve_granian(
            factory, name=args.app, bind=args.bind, workers=args.workers, threads=args.threads
        )
    else:
        serve(factory, bind=args.bind, workers=args.workers, threads=args.threads)


if __name__ == "__main__":
    main()
