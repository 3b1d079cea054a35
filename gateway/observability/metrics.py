"""Prometheus metrics at ``GET /metrics`` (text exposition format 0.0.4).

Counted in process, for every response: requests by route, method and status; latency
histograms by route and method (time until the response starts: a streamed download's body
is not included); error responses by error code; quota refusals by quota. For every call to
the generation backend: its latency until the response headers, and its status (or
``timeout`` / ``error`` when no answer came); refusals of the gateway's own credential
(401/403) separately. Anomaly trips by rule and action. Read from the database at scrape
time: the kill switch and keys by status (revocations). Labels are route templates
(``/v1/videos/<video_id>``), methods from a fixed set, statuses and error codes, never a value
a client typed, so no key can reach a label.

gunicorn runs several worker processes and a scrape reaches one of them. With a spool
directory (setting ``metrics_dir``; ``drawbridge serve`` makes a fresh one) each process
publishes its counters there every second and at exit, and any worker answers with the sum
of all of them; the files of workers that died stay, so counters never go backwards while
the server runs. Under plain ``gunicorn gateway.wsgi:app`` no code runs in the master before
the workers fork, so without ``metrics_dir`` the workers share a directory named after their
gunicorn master (``share_with_sibling_workers``). Without either, each process reports only
its own requests.

Who may scrape: with ``metrics_token`` set, callers that send it as a Bearer credential;
otherwise loopback clients only.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from gateway.http.current import EXTENSION as STATE_EXTENSION
from gateway.http.current import current_context, current_request, current_state
from gateway.http.errors import ApiError
from gateway.settings import Settings
from gateway.state import GatewayState
from keys.errors import ProofInvalid, ProofReplayed, ProofRequired
from keys.process import current_pid
from keys.records.inventory import key_counts

log = logging.getLogger("drawbridge.metrics")

EXTENSION = "drawbridge.metrics"
PUBLISH_SECONDS = 1.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = "drawbridge_http_requests_total"
LATENCY = "drawbridge_http_request_duration_seconds"
REJECTIONS = "drawbridge_rejections_total"
QUOTA_REFUSALS = "drawbridge_quota_refusals_total"
UPSTREAM_LATENCY = "drawbridge_upstream_request_duration_seconds"
UPSTREAM_RESPONSES = "drawbridge_upstream_responses_total"
UPSTREAM_AUTH_FAILURES = "drawbridge_upstream_auth_failures_total"
ANOMALY_TRIPS = "drawbridge_anomaly_trips_total"
REDIS_FALLBACKS = "drawbridge_redis_fallback_total"
PROVENANCE = "drawbridge_provenance_deliveries_total"
PROVENANCE_CACHE = "drawbridge_provenance_cache_total"
_HELP = {
    REQUESTS: ("counter", "Responses sent, by route template, method and status."),
    LATENCY: ("histogram", "Seconds from request to response start, by route and method."),
    REJECTIONS: ("counter", "Error responses (4xx and 5xx), by error code."),
    QUOTA_REFUSALS: ("counter", "Requests refused for a quota (429), by quota."),
    UPSTREAM_LATENCY: (
        "histogram",
        "Seconds from sending a call to the generation backend to its response headers.",
    ),
    UPSTREAM_RESPONSES: (
        "counter",
        "Calls to the generation backend by status (timeout, error: no answer).",
    ),
    UPSTREAM_AUTH_FAILURES: (
        "counter",
        "Backend answers 401/403 to the gateway's own credential (see /readyz).",
    ),
    ANOMALY_TRIPS: ("counter", "Anomaly rules that stopped a key, by rule and action."),
    REDIS_FALLBACKS: (
        "counter",
        "Counter checks and updates made in process memory because Redis was unreachable, "
        "by store (rate_limits, anomaly_counters).",
    ),
    PROVENANCE: (
        "counter",
        "Videos delivered, by outcome: signed, or why they went out unsigned (not_mp4, "
        "too_large, content_encoded, sign_failed).",
    ),
    PROVENANCE_CACHE: (
        "counter",
        "Video deliveries by content cache outcome: hit (the backend answered 304, the "
        "cached bytes went out), miss (no entry), refused (the backend sent the video again, "
        "or it is gone).",
    ),
}

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels]

# Shown as 0 before the first one, so that an alert on their rate has a series to read: a
# proof refusal on a bound key is a leaked string being tried (docs/proof-of-possession.md).
DECLARED: tuple[Sample, ...] = tuple(
    (REJECTIONS, (("code", error.code),)) for error in (ProofRequired, ProofInvalid, ProofReplayed)
)

bp = Blueprint("metrics", __name__)


class MetricsRegistry:
    """One process's counters and histograms, optionally published to a spool directory
    that the other worker processes share."""

    def __init__(self, spool_dir: Path | None = None, publish_every: float = PUBLISH_SECONDS):
        self._spool_dir = spool_dir
        self._publish_every = publish_every
        self._lock = threading.Lock()
        self._counters: dict[Sample, float] = {}
        # (family, labels) -> [per-bucket counts..., +Inf count], sum
        self._histograms: dict[Sample, tuple[list[int], float]] = {}
        self._pid = os.getpid()
        self._file_name = self._new_file_name()
        self._dirty = False
        self._publisher: threading.Thread | None = None
        self._find_spool: Callable[[], Path | None] | None = None
        _REGISTRIES.add(self)

    def follow_spool(self, find: Callable[[], Path | None]) -> None:
        """Take the spool directory from ``find`` in each process that counts: asked at the
        first count or scrape (in a gunicorn worker, after the fork). Call before counting."""
        with self._lock:
            self._find_spool = find
            self._pid = -1  # no process has this pid: the next use looks the spool up

    def _new_file_name(self) -> str:
        # Not the pid alone: a new worker may get a dead one's pid, and must not overwrite
        # the counts that the dead one left behind.
        return f"{os.getpid()}-{secrets.token_hex(4)}.json"

    def _after_fork(self) -> None:
        # A forked child starts from zero: its parent's counts are the parent's file's.
        if self._pid != current_pid():
            self._pid = current_pid()
            self._file_name = self._new_file_name()
            self._counters, self._histograms = {}, {}
            self._publisher = None
            if self._find_spool is not None:
                self._spool_dir = self._find_spool()

    # -- recording ---------------------------------------------------------------------

    def count_response(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        error_code: str | None,
        error_param: str | None = None,
    ) -> None:
        method = method if method in _METHODS else "OTHER"
        with self._lock:
            self._after_fork()
            self._add((REQUESTS, (("route", route), ("method", method), ("status", str(status)))))
            if status >= 400 and error_code:
                self._add((REJECTIONS, (("code", error_code),)))
                if error_code == "quota_exceeded" and error_param:
                    # The quota's metric name (a fixed set), never a client's value.
                    self._add((QUOTA_REFUSALS, (("quota", error_param),)))
            self._observe((LATENCY, (("route", route), ("method", method))), seconds)
            self._changed()

    def count_upstream(self, method: str, status: int | str, seconds: float | None) -> None:
        """One call to the generation backend: its status (or timeout / error) and, when it
        answered, the seconds until its response headers."""
        method = method if method in _METHODS else "OTHER"
        with self._lock:
            self._after_fork()
            self._add((UPSTREAM_RESPONSES, (("status", str(status)),)))
            if status in (401, 403):
                self._add((UPSTREAM_AUTH_FAILURES, ()))
            if seconds is not None:
                self._observe((UPSTREAM_LATENCY, (("method", method),)), seconds)
            self._changed()

    def count_anomaly(self, rule: str, action: str) -> None:
        """An anomaly rule stopped a key (suspended it, or ended its grace)."""
        with self._lock:
            self._after_fork()
            self._add((ANOMALY_TRIPS, (("rule", rule), ("action", action))))
            self._changed()

    def _add(self, sample: Sample) -> None:
        self._counters[sample] = self._counters.get(sample, 0) + 1

    def _observe(self, key: Sample, seconds: float) -> None:
        counts, total = self._histograms.get(key) or ([0] * (len(LATENCY_BUCKETS) + 1), 0.0)
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._histograms[key] = (counts, total + seconds)

    def _changed(self) -> None:
        self._dirty = True
        self._ensure_publisher()

    def count(self, family: str, labels: Labels) -> None:
        """Add one to a counter of ``_HELP`` (events other than responses)."""
        with self._lock:
            self._after_fork()
            self._add((family, labels))
            self._changed()

    # -- sharing between processes -----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._after_fork()
            return {
                "counters": [
                    [name, list(labels), value] for (name, labels), value in self._counters.items()
                ],
                "histograms": [
                    [name, list(labels), counts, total]
                    for (name, labels), (counts, total) in self._histograms.items()
                ],
            }

    @property
    def spool_dir(self) -> Path | None:
        return self._spool_dir

    def _ensure_publisher(self) -> None:
        if self._spool_dir is not None and self._publisher is None:
            self._publisher = threading.Thread(
                target=self._publish_loop, name="metrics-publisher", daemon=True
            )
            self._publisher.start()

    def _publish_loop(self) -> None:
        while True:
            time.sleep(self._publish_every)
            if self._dirty:
                self.publish()

    def publish(self) -> None:
        """Write this process's snapshot where the other workers read it (atomically)."""
        if self._spool_dir is None:
            return
        self._dirty = False
        snapshot = self.snapshot()
        try:
            self._spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self._spool_dir, prefix=".tmp-", suffix=".json", delete=False
            ) as stream:
                json.dump(snapshot, stream)
            os.replace(stream.name, self._spool_dir / self._file_name)
        except OSError as exc:
            log.warning("could not publish metrics to %s: %s", self._spool_dir, exc.strerror)

    def merged(self) -> dict[str, Any]:
        """Every process's counts: this one's (current) and the others' last published."""
        own = self.snapshot()
        snapshots = [own]
        if self._spool_dir is not None and self._spool_dir.is_dir():
            for path in self._spool_dir.glob("*.json"):
                if path.name == self._file_name:
                    continue
                try:
                    snapshots.append(json.loads(path.read_text()))
                except (OSError, ValueError):
                    continue  # a file being replaced; its next version counts next time
        counters: dict[Sample, float] = {}
        histograms: dict[Sample, tuple[list[int], float]] = {}
        for snapshot in snapshots:
            for name, labels, value in snapshot.get("counters", []):
                sample = (name, tuple((str(k), str(v)) for k, v in labels))
                counters[sample] = counters.get(sample, 0) + value
            for name, labels, counts, total in snapshot.get("histograms", []):
                sample = (name, tuple((str(k), str(v)) for k, v in labels))
                into, into_total = histograms.get(sample) or ([0] * len(counts), 0.0)
                histograms[sample] = (
                    [a + b for a, b in zip(into, counts, strict=True)],
                    into_total + total,
                )
        return {"counters": counters, "histograms": histograms}

    # -- exposition --------------------------------------------------------------------

    def render(self, gauges: Iterable[tuple[str, str, list[tuple[Labels, float]]]] = ()) -> str:
        """The Prometheus text format: counters, histograms, then the given gauges."""
        data = self.merged()
        for sample in DECLARED:
            data["counters"].setdefault(sample, 0)
        lines: list[str] = []
        for family, (kind, text) in _HELP.items():
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
            if kind == "counter":
                for (name, labels), value in sorted(data["counters"].items()):
                    if name == family:
                        lines.append(f"{name}{_labels(labels)} {_number(value)}")
                continue
            for (name, labels), (counts, total) in sorted(data["histograms"].items()):
                if name != family:
                    continue
                running = 0
                for bound, count in zip((*LATENCY_BUCKETS, None), counts, strict=True):
                    running += count
                    le = "+Inf" if bound is None else repr(float(bound))
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
                lines.append(f"{name}_count{_labels(labels)} {running}")
        for family, text, samples in gauges:
            lines += [f"# HELP {family} {text}", f"# TYPE {family} gauge"]
            lines += [f"{family}{_labels(labels)} {_number(value)}" for labels, value in samples]
        return "\n".join(lines) + "\n"


_REGISTRIES: weakref.WeakSet[MetricsRegistry] = weakref.WeakSet()


def publish_all() -> None:
    """Publish every registry of this process (at exit: the last second's counts)."""
    for registry in list(_REGISTRIES):
        registry.publish()


atexit.register(publish_all)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def prepare_spool_dir(settings: Settings) -> Path:
    """The directory the workers of one server share: the configured one, emptied of an
    earlier run's files, or a fresh temporary one (exported to the workers through
    DRAWBRIDGE_METRICS_DIR). Call it in the server's master before workers start."""
    if settings.metrics_dir:
        spool = Path(settings.metrics_dir)
        spool.mkdir(parents=True, exist_ok=True)
        for stale in spool.glob("*.json"):
            with contextlib.suppress(OSError):
                stale.unlink()
        return spool
    spool = Path(tempfile.mkdtemp(prefix="drawbridge-metrics-"))
    os.environ["DRAWBRIDGE_METRICS_DIR"] = str(spool)
    master = os.getpid()

    def _remove() -> None:
        if os.getpid() == master:  # workers inherit this hook; only the master cleans up
            for path in spool.glob("*"):
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                spool.rmdir()

    atexit.register(_remove)
    return spool


SIBLING_SPOOL_PREFIX = "drawbridge-metrics-gunicorn-"


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), or "" if unknown:
    with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name is in parentheses and may hold spaces: split after it.
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _is_running(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_start(pid) == started


def sibling_spool_dir() -> Path | None:
    """The spool that the workers of this process's gunicorn master share: a private
    directory in the temporary folder named after the master (pid and start time). Spools
    of masters that have ended are removed. None outside gunicorn, or if it is unsafe."""
    if "gunicorn.arbiter" not in sys.modules:
        return None
    base, uid = Path(tempfile.gettempdir()), os.getuid()
    prefix = f"{SIBLING_SPOOL_PREFIX}{uid}-"
    for stale in base.glob(prefix + "*"):
        pid, _, started = stale.name[len(prefix) :].partition("-")
        if pid.isdigit() and not _is_running(int(pid), started):
            shutil.rmtree(stale, ignore_errors=True)
    master = os.getppid()
    spool = base / f"{prefix}{master}-{_process_start(master)}"
    try:
        # Created private, and refused if someone else made it first (a shared /tmp).
        spool.mkdir(mode=0o700, exist_ok=True)
        info = spool.lstat()
    except OSError as exc:
        log.warning("metrics: no shared spool at %s (%s): per-worker counts", spool, exc)
        return None
    if spool.is_symlink() or info.st_uid != uid or info.st_mode & 0o077:
        log.warning("metrics: %s is not a private directory of ours: per-worker counts", spool)
        return None
    return spool


def share_with_sibling_workers(app: Flask) -> None:
    """Let the workers of one gunicorn master answer /metrics for all of them, when no
    ``metrics_dir`` is configured and nothing prepared one before they forked."""
    registry: MetricsRegistry = app.extensions[EXTENSION]
    if registry.spool_dir is None:
        registry.follow_spool(sibling_spool_dir)


# -- the Flask side ----------------------------------------------------------------------


def init_app(app: Flask, settings: Settings) -> None:
    """Count the upstream calls and anomaly trips of ``app``; serve ``/metrics``. The app
    counts each of its responses with ``count_response`` (gateway/app.py's after-request
    hook)."""
    spool = Path(settings.metrics_dir) if settings.metrics_dir else None
    registry = MetricsRegistry(spool)
    app.extensions[EXTENSION] = registry
    state: GatewayState | None = app.extensions.get(STATE_EXTENSION)
    if state is not None:
        state.upstream.observe = registry.count_upstream
        state.anomalies.on_trip = registry.count_anomaly
        state.signers.observe = lambda outcome: registry.count(PROVENANCE, (("outcome", outcome),))
        state.content_cache.observe = lambda outcome: registry.count(
            PROVENANCE_CACHE, (("outcome", outcome),)
        )
    outage = state.limits.outage if state is not None else None
    if outage is not None:
        outage.listen(lambda store: registry.count(REDIS_FALLBACKS, (("store", store),)))
    app.register_blueprint(bp)


def count_response(response: Response) -> None:
    """Count one response, by route, method, status and error code."""
    registry: MetricsRegistry = current_app.extensions[EXTENSION]
    context, incoming = current_context(), current_request()
    registry.count_response(
        incoming.url_rule.rule if incoming.url_rule is not None else "(unmatched)",
        incoming.method,
        response.status_code,
        time.perf_counter() - context.started,
        context.error_code,
        context.error_param,
    )


def _authorize() -> None:
    """Raises ApiError: 401 without the configured token, 403 from a non-loopback client."""
    token = current_state().settings.metrics_token
    if token:
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), token.reveal().encode()
        ):
            raise ApiError(
                401, "Send the metrics token as 'Authorization: Bearer <token>'.", "invalid_token"
            )
        return
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiError(
            403,
            "Metrics are served to loopback clients only; set metrics_token to scrape "
            "from elsewhere.",
            "permission_denied",
        )


def _database_gauges() -> list[tuple[str, str, list[tuple[Labels, float]]]]:
    store = current_state().store
    try:
        with store.read() as tx:
            lockdown = bool(tx.lockdown.state().lockdown)
            by_status = key_counts(tx.session)
    except Exception as exc:
        log.warning("metrics: database unavailable (%s)", type(exc).__name__)
        return [
            ("drawbridge_database_up", "Whether the scrape could read the database.", [((), 0)])
        ]
    return [
        ("drawbridge_database_up", "Whether the scrape could read the database.", [((), 1)]),
        (
            "drawbridge_lockdown",
            "1 while the kill switch refuses all tester traffic.",
            [((), int(lockdown))],
        ),
        (
            "drawbridge_api_keys",
            "Tester keys by stored status (revoked, suspended, rotated, active).",
            [((("status", status),), count) for status, count in sorted(by_status.items())],
        ),
        (
            "drawbridge_revoked_keys",
            "Tester keys revoked so far.",
            [((), by_status.get("revoked", 0))],
        ),
    ]


def _redis_gauges() -> list[tuple[str, str, list[tuple[Labels, float]]]]:
    outage = current_state().limits.outage
    if outage is None:
        return []
    return [
        (
            "drawbridge_redis_up",
            "Whether the answering process's last use of Redis succeeded.",
            [((), int(outage.up))],
        )
    ]


@bp.get("/metrics")
def metrics() -> Response:
    _authorize()
    registry: MetricsRegistry = current_app.extensions[EXTENSION]
    return Response(
        registry.render([*_database_gauges(), *_redis_gauges()]),
        content_type="text/plain; version=0.0.4; charset=utf-8",
    )
