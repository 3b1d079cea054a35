"""Revocation and lockdown propagation across gateway instances and workers.

    python -m bench.revocation                      # 2 instances x 4 workers, 10 trials each
    python -m bench.revocation --trials 3 --json out.json
    python -m bench.revocation --sqlite             # the same, all instances on one SQLite file

The stack: the simulator as backend, N gateway instances (gunicorn, W workers each, gthread)
on one scratch PostgreSQL database (created for the run, dropped after; hot reads reused
until a commit notice: keys/commit_notices.py) or with ``--sqlite`` one SQLite file (hot
reads reused until a commit: keys/commit_stamp.py), with Redis for the rate-limit and
anomaly counters (``DRAWBRIDGE_REDIS_URL``). Per trial, client threads hammer
``GET /v1/videos/{id}`` with ONE key on every instance (keep-alive connections, several per
instance so that several workers serve them); after a warm-up the key is revoked through the
admin API (or the program locked down), hammering goes on for a while, then stops. Every
request's start, end, instance and outcome is recorded with one monotonic clock.

Reported, per kind of trial:

(a) violations: admitted requests that STARTED more than 100 ms after the revoke call
    returned (the promise: none, on any instance); also those that started after it at all;
(b) per instance: when it was first seen refusing (the end of its first refused response,
    relative to the revoke call's return) and the start of its last admitted request
    relative to the same moment; p50 and p99 over trials x instances.

Every loop is bounded: trials, seconds per trial, requests per client thread, and a watchdog
on the whole run. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.harness import (
    BENCH_COHORT,
    Service,
    command_line,
    fresh_postgres_database,
    install_watchdog,
    machine_facts,
    percentile,
    prepare_database,
    start_gateway,
    start_simulator,
    write_json,
)

BOUND_SECONDS = 0.100
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
HTTP_TIMEOUT = 10.0


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


# -- the stack ---------------------------------------------------------------------------


@dataclass
class PropagationStack:
    """Simulator + N gateway instances on one scratch database and Redis.

    The database is a scratch PostgreSQL database on ``postgres_url``, or with ``sqlite`` a
    SQLite file that every instance on this machine shares.
    """

    postgres_url: str = DEFAULT_POSTGRES
    redis_url: str = DEFAULT_REDIS
    instances: int = 2
    workers: int = 4
    threads: int = 4
    # Extra DRAWBRIDGE_* settings for every instance (e.g. trusted proxies, webhooks).
    extra_env: dict[str, str] = field(default_factory=dict)
    sqlite: bool = False

    gateways: list[Service] = field(init=False, default_factory=list)
    simulator: Service = field(init=False)
    settings_env: dict[str, str] = field(init=False)
    admin_token: str = field(init=False)
    bench_tester: str = field(init=False)
    video_id: str = field(init=False)
    directory: Path = field(init=False)
    _exit: contextlib.ExitStack = field(init=False)

    def __enter__(self) -> PropagationStack:
        self._exit = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        from keys.access.vault import new_root_secret

        self.directory = Path(tempfile.mkdtemp(prefix="drawbridge-revocation-"))
        self._exit.callback(shutil.rmtree, self.directory, ignore_errors=True)
        master = "sk-bench-master-" + secrets.token_urlsafe(24)
        self.simulator = start_simulator(
            self.directory, api_key=master, job_seconds=0.2, content_bytes=4096
        )
        self._exit.callback(self.simulator.stop)
        if self.sqlite:
            database = f"sqlite:///{self.directory / 'drawbridge.db'}"
        else:
            database = self._exit.enter_context(fresh_postgres_database(self.postgres_url))
        self.settings_env = {
            "DRAWBRIDGE_DATABASE_URL": database,
            "DRAWBRIDGE_DATABASE_POOL_SIZE": "4",
            "DRAWBRIDGE_REDIS_URL": self.redis_url,
            "DRAWBRIDGE_ROOT_SECRET": new_root_secret(),
            "DRAWBRIDGE_UPSTREAM_URL": self.simulator.url + "/v1",
            "DRAWBRIDGE_UPSTREAM_API_KEY": master,
            "DRAWBRIDGE_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        self.bench_tester, seed_secret = prepare_database(self.settings_env)
        self.admin_token = self._create_admin_token()
        for number in range(self.instances):
            gateway = start_gateway(
                self.directory,
                settings_env=self.settings_env,
                workers=self.workers,
                threads=self.threads,
                name=f"gateway-{number}",
            )
            self._exit.callback(gateway.stop)
            self.gateways.append(gateway)
        self.video_id = self._create_video(seed_secret)

    def _create_admin_token(self) -> str:
        from gateway.settings import load_settings, root_secret_of
        from gateway.state import build_store
        from keys.access.vault import Vault

        settings = load_settings(environ=self.settings_env)
        store = build_store(settings, Vault(root_secret_of(settings)))
        try:
            with store.transaction() as tx:
                return tx.tokens.create("bench admin", "admin", "bench").secret
        finally:
            store.database.dispose()

    def _create_video(self, secret: str) -> str:
        """A completed video of the bench tester, made through the first instance."""
        headers = {"Authorization": f"Bearer {secret}"}
        base = self.gateways[0].url
        with http_session() as session:
            created = session.post(
                f"{base}/v1/videos",
                headers=headers,
                json={"prompt": "a propagation clip", "model": "sora-2", "seconds": "4"},
                timeout=HTTP_TIMEOUT,
            )
            if created.status_code != 200:
                raise RuntimeError(f"POST /v1/videos: {created.status_code} {created.text}")
            video_id: str = created.json()["id"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                answer = session.get(
                    f"{base}/v1/videos/{video_id}", headers=headers, timeout=HTTP_TIMEOUT
                )
                if answer.status_code == 200 and answer.json()["status"] == "completed":
                    return video_id
                time.sleep(0.1)
        raise RuntimeError(f"video {video_id} did not complete")

    @property
    def urls(self) -> list[str]:
        return [gateway.url for gateway in self.gateways]

    def admin(self, method: str, path: str, instance: int = 0, **kwargs: Any) -> requests.Response:
        """One admin API call (``path`` below /admin/v1) on one instance."""
        with http_session() as session:
            return session.request(
                method,
                f"{self.gateways[instance].url}/admin/v1{path}",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                timeout=HTTP_TIMEOUT,
                **kwargs,
            )

    def admin_ok(self, method: str, path: str, instance: int = 0, **kwargs: Any) -> Any:
        answer = self.admin(method, path, instance, **kwargs)
        if answer.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json()

    def new_tester(self, cohort: str | None = None) -> str:
        suffix = secrets.token_hex(6)
        payload = {"name": f"Tester {suffix}", "email": f"tester-{suffix}@example.com"}
        if cohort:
            payload["cohort"] = cohort
        tester_id: str = self.admin_ok("POST", "/testers", json=payload)["id"]
        return tester_id

    def new_key(self, tester_id: str | None = None, **payload: Any) -> dict[str, Any]:
        """A fresh key (id, secret, hint, ...) of ``tester_id`` (default: the bench tester)."""
        tester_id = tester_id or self.bench_tester
        issued: dict[str, Any] = self.admin_ok("POST", f"/testers/{tester_id}/keys", json=payload)
        return issued

    def log_tails(self) -> str:
        return "\n".join(f"--- {g.name}\n{g.log_tail()}" for g in self.gateways)


# -- hammering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    start: float  # time.perf_counter() when the request was sent
    end: float
    instance: int
    status: int
    code: str | None  # the error code, None when admitted or unreadable

    @property
    def admitted(self) -> bool:
        return self.status == 200


class Hammer:
    """Client threads sending one request after another to every instance, bounded."""

    def __init__(
        self,
        urls: list[str],
        path: str,
        secret: str,
        clients_per_instance: int = 4,
        max_seconds: float = 10.0,
        max_requests_per_client: int = 5_000,
    ) -> None:
        self._targets = [url + path for url in urls]
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._clients = clients_per_instance
        self._max_seconds = max_seconds
        self._max_requests = max_requests_per_client
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._samples: list[list[Sample]] = []

    def __enter__(self) -> Hammer:
        for instance, target in enumerate(self._targets):
            for _ in range(self._clients):
                samples: list[Sample] = []
                self._samples.append(samples)
                thread = threading.Thread(
                    target=self._run, args=(instance, target, samples), daemon=True
                )
                self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(HTTP_TIMEOUT + 5)
        return sorted((s for samples in self._samples for s in samples), key=lambda s: s.start)

    def _run(self, instance: int, target: str, samples: list[Sample]) -> None:
        deadline = time.perf_counter() + self._max_seconds
        with http_session() as session:
            for _ in range(self._max_requests):
                if self._stop.is_set() or time.perf_counter() > deadline:
                    return
                start = time.perf_counter()
                try:
                    answer = session.get(target, headers=self._headers, timeout=HTTP_TIMEOUT)
                    status, body = answer.status_code, answer.content
                except requests.RequestException:
                    status, body = 0, b""
                end = time.perf_counter()
                code = None
                if status != 200:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        code = json.loads(body)["error"]["code"]
                samples.append(Sample(start, end, instance, status, code))


# -- trials ------------------------------------------------------------------------------


@dataclass
class InstanceOutcome:
    instance: int
    requests: int
    admitted: int
    refused: int
    other: dict[str, int]
    # Seconds relative to the moment the admin call returned (negative: before it).
    first_refusal_seen: float | None
    last_admitted_start: float | None
    first_admit_after_lift: float | None = None


@dataclass
class Trial:
    kind: str  # "revoke" | "lockdown"
    action_instance: int
    action_seconds: float  # how long the admin call took
    violations: int  # admitted, started > BOUND after the call returned
    admitted_after_return: int  # admitted, started after the call returned at all
    instances: list[InstanceOutcome]
    # The baseline: how long any request of this trial took (p50, p99), in seconds. A
    # refusal cannot be seen sooner than one request after the change.
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    admin_api_during_lockdown: list[int] = field(default_factory=list)


def analyse(
    kind: str,
    samples: list[Sample],
    instances: int,
    action_instance: int,
    called: float,
    returned: float,
    refusal_code: str,
    lift: tuple[float, float] | None = None,
) -> Trial:
    """Classify the samples of one trial around the admin call that returned at ``returned``.

    With ``lift`` (when the call that lifted a lockdown was made and when it returned), only
    samples answered before that call was made count for the refusal (one still in flight
    may rightly be served after the lift commits); those started after its return show when
    each instance admitted again.
    """
    window = [s for s in samples if lift is None or s.end < lift[0]]
    outcomes = []
    for instance in range(instances):
        mine = [s for s in window if s.instance == instance]
        refused = [s for s in mine if s.code == refusal_code]
        admitted = [s for s in mine if s.admitted]
        other: dict[str, int] = {}
        for s in mine:
            if not s.admitted and s.code != refusal_code:
                name = f"{s.status} {s.code}"
                other[name] = other.get(name, 0) + 1
        resumed = None
        if lift is not None:
            first_ok = [
                s.end
                for s in samples
                if s.instance == instance and s.start >= lift[1] and s.admitted
            ]
            resumed = min(first_ok) - lift[1] if first_ok else None
        outcomes.append(
            InstanceOutcome(
                instance,
                len(mine),
                len(admitted),
                len(refused),
                other,
                min(s.end for s in refused) - returned if refused else None,
                max(s.start for s in admitted) - returned if admitted else None,
                resumed,
            )
        )
    latencies = sorted(s.end - s.start for s in window)
    return Trial(
        kind,
        action_instance,
        returned - called,
        sum(1 for s in window if s.admitted and s.start > returned + BOUND_SECONDS),
        sum(1 for s in window if s.admitted and s.start > returned),
        outcomes,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
    )


def revoke_trial(
    stack: PropagationStack,
    action_instance: int = 0,
    clients_per_instance: int = 4,
    warmup: float = 0.6,
    after: float = 0.6,
) -> Trial:
    """Hammer with a fresh key, revoke it through one instance's admin API, keep hammering."""
    key = stack.new_key()
    path = f"/v1/videos/{stack.video_id}"
    with Hammer(
        stack.urls, path, key["secret"], clients_per_instance, warmup + after + 5
    ) as hammer:
        time.sleep(warmup)
        called = time.perf_counter()
        answer = stack.admin(
            "POST", f"/keys/{key['id']}/revoke", action_instance, json={"reason": "bench"}
        )
        returned = time.perf_counter()
        if answer.status_code != 200:
            raise RuntimeError(f"revoke: {answer.status_code} {answer.text}")
        time.sleep(after)
        samples = hammer.stop()
    return analyse(
        "revoke", samples, len(stack.urls), action_instance, called, returned, "key_revoked"
    )


def lockdown_trial(
    stack: PropagationStack,
    action_instance: int = 0,
    clients_per_instance: int = 4,
    warmup: float = 0.6,
    after: float = 0.6,
) -> Trial:
    """Hammer, lock the program down through one instance, check the admin API on every
    instance, lift the lockdown, and see traffic resume."""
    key = stack.new_key()
    path = f"/v1/videos/{stack.video_id}"
    admin_statuses: list[int] = []
    try:
        with Hammer(
            stack.urls, path, key["secret"], clients_per_instance, warmup + 2 * after + 8
        ) as hammer:
            time.sleep(warmup)
            called = time.perf_counter()
            answer = stack.admin(
                "POST",
                "/lockdown",
                action_instance,
                json={"lockdown": True, "reason": "bench"},
            )
            returned = time.perf_counter()
            if answer.status_code != 200:
                raise RuntimeError(f"lockdown on: {answer.status_code} {answer.text}")
            time.sleep(after / 2)
            for instance in range(len(stack.urls)):
                admin_statuses.append(stack.admin("GET", "/lockdown", instance).status_code)
            time.sleep(after / 2)
            lift_called = time.perf_counter()
            off = stack.admin(
                "POST", "/lockdown", action_instance, json={"lockdown": False, "reason": "over"}
            )
            lifted = time.perf_counter()
            time.sleep(after)
            samples = hammer.stop()
    finally:
        stack.admin("POST", "/lockdown", 0, json={"lockdown": False, "reason": "cleanup"})
    if off.status_code != 200:
        raise RuntimeError(f"lockdown off: {off.status_code} {off.text}")
    trial = analyse(
        "lockdown",
        samples,
        len(stack.urls),
        action_instance,
        called,
        returned,
        "lockdown",
        (lift_called, lifted),
    )
    trial.admin_api_during_lockdown = admin_statuses
    return trial


# -- reporting ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:8.1f}"


def summarise(trials: list[Trial]) -> dict[str, Any]:
    """p50 and p99 (nearest rank) over trials x instances, in milliseconds."""

    def stats(values: list[float]) -> dict[str, float | int | None]:
        ordered = sorted(values)
        if not ordered:
            return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        return {
            "n": len(ordered),
            "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2),
        }

    outcomes = [o for t in trials for o in t.instances]
    return {
        "trials": len(trials),
        "requests": sum(o.requests for o in outcomes),
        "violations_over_100ms": sum(t.violations for t in trials),
        "admitted_after_return": sum(t.admitted_after_return for t in trials),
        "instances_never_refusing": sum(1 for o in outcomes if o.first_refusal_seen is None),
        "first_refusal_seen": stats(
            [o.first_refusal_seen for o in outcomes if o.first_refusal_seen is not None]
        ),
        "last_admitted_start": stats(
            [o.last_admitted_start for o in outcomes if o.last_admitted_start is not None]
        ),
        "admin_call": stats([t.action_seconds for t in trials]),
        "request_latency_p50": stats([t.latency_p50 for t in trials]),
        "request_latency_p99": stats([t.latency_p99 for t in trials]),
        "resumed_after_lift": stats(
            [o.first_admit_after_lift for o in outcomes if o.first_admit_after_lift is not None]
        ),
        "other_outcomes": _merged([o.other for o in outcomes]),
    }


def _merged(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for name, value in count.items():
            total[name] = total.get(name, 0) + value
    return total


def print_summary(kind: str, summary: dict[str, Any]) -> None:
    def row(name: str, stats: dict[str, Any]) -> str:
        if not stats["n"]:
            return f"  {name:<44} (none)"
        return (
            f"  {name:<44} p50 {stats['p50_ms']:8.1f} ms   p99 {stats['p99_ms']:8.1f} ms"
            f"   max {stats['max_ms']:8.1f} ms   (n={stats['n']})"
        )

    print(f"\n{kind}: {summary['trials']} trials, {summary['requests']} requests")
    print(
        f"  admitted requests started > 100 ms after the call returned: "
        f"{summary['violations_over_100ms']}   (started after it at all: "
        f"{summary['admitted_after_return']})"
    )
    print(row("first refusal seen, after the call returned", summary["first_refusal_seen"]))
    print(row("last admitted start, relative to the return", summary["last_admitted_start"]))
    print(row("the admin call itself", summary["admin_call"]))
    print(row("baseline: request latency, each trial's p50", summary["request_latency_p50"]))
    print(row("baseline: request latency, each trial's p99", summary["request_latency_p99"]))
    seen, usual = summary["first_refusal_seen"], summary["request_latency_p50"]
    if seen["n"] and usual["n"] and usual["p50_ms"]:
        print(
            f"  first refusal seen / request latency (p50s): {seen['p50_ms'] / usual['p50_ms']:.2f}"
        )
    if summary["resumed_after_lift"]["n"]:
        print(row("first admit after lockdown off returned", summary["resumed_after_lift"]))
    if summary["other_outcomes"]:
        print(f"  other outcomes: {summary['other_outcomes']}")
    if summary["instances_never_refusing"]:
        print(f"  instance-trials without a refusal: {summary['instances_never_refusing']}")


def print_trial(trial: Trial) -> None:
    parts = [
        f"#{o.instance}: {o.requests:4d} req, first refusal {_ms(o.first_refusal_seen)} ms, "
        f"last admit start {_ms(o.last_admitted_start)} ms"
        for o in trial.instances
    ]
    print(
        f"  {trial.kind:<8} via #{trial.action_instance} "
        f"(call {trial.action_seconds * 1000:6.1f} ms): " + " | ".join(parts),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL")
    parser.add_argument(
        "--sqlite", action="store_true", help="one SQLite file shared by every instance"
    )
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis URL (its own db number)")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--trials", type=int, default=10, help="per kind (revoke, lockdown)")
    parser.add_argument("--clients", type=int, default=4, help="client threads per instance")
    parser.add_argument("--warmup", type=float, default=0.6, help="seconds before the call")
    parser.add_argument("--after", type=float, default=0.6, help="seconds after the call")
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--watchdog", type=int, default=900, help="seconds for the whole run")
    args = parser.parse_args()
    install_watchdog(args.watchdog)

    print(
        f"bench.revocation: {args.instances} instances x {args.workers} workers x "
        f"{args.threads} threads, {'SQLite' if args.sqlite else 'PostgreSQL'} + Redis, "
        f"{args.clients} client threads per "
        f"instance, {args.trials} trials per kind",
        flush=True,
    )
    stack = PropagationStack(
        args.postgres,
        args.redis,
        args.instances,
        args.workers,
        args.threads,
        # 127.0.0.1 collects one auth failure per refused request: do not let the per-IP
        # failure limit turn refusals into 429s between trials.
        extra_env={"DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE": "1000000000"},
        sqlite=args.sqlite,
    )
    results: dict[str, list[Trial]] = {"revoke": [], "lockdown": []}
    with stack:
        print(f"stack up: {', '.join(stack.urls)}; video {stack.video_id}", flush=True)
        for number in range(args.trials):
            instance = number % args.instances
            for kind, run in (("revoke", revoke_trial), ("lockdown", lockdown_trial)):
                trial = run(stack, instance, args.clients, args.warmup, args.after)
                results[kind].append(trial)
                print_trial(trial)
    summaries = {kind: summarise(trials) for kind, trials in results.items() if trials}
    for kind, summary in summaries.items():
        print_summary(kind, summary)
    failed = sum(s["violations_over_100ms"] for s in summaries.values())
    print(
        "\nRESULT: "
        + ("no admit more than 100 ms after any call returned" if not failed else "VIOLATIONS")
    )
    if args.json_path:
        write_json(
            args.json_path,
            {
                "command": command_line(),
                "settings": vars(args),
                "machine": machine_facts(),
                "cohort": BENCH_COHORT,
                "summaries": summaries,
                "trials": {kind: [asdict(t) for t in trials] for kind, trials in results.items()},
            },
        )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
