"""The day after the leak: what a flood of refused requests costs, ``python -m bench.flood``.

One run starts the simulator and the gateway (bench/harness.py ``Stack``: gunicorn, 1 worker
x 8 threads by default, SQLite or ``--database-url``), with ``trusted_proxies = 1`` and the
shipped nginx configuration (config/nginx.conf) in front of it. Every client is on
127.0.0.1: the flooder and the good tester share one address, as behind a NAT or a proxy.
For each front (``direct``, then ``nginx``):

* quiet: the good tester's sequential ``GET /v1/videos/{id}`` (one keep-alive connection),
  p50/p99;
* authorised: ``--connections`` connections of the good key (wrk, else the Python client):
  the worker CPU of one authorised request, the yardstick of this run;
* then, one after another, ``--connections`` connections flood ``GET /v1/videos/{id}`` for
  ``--duration`` seconds with (a) the revoked key, (b) random well-formed keys (valid
  checksum, a new one per request from a pool of ``--random-keys``), (c) no key, (d) a valid
  key past its rate limit (1 request a minute; its cohort's anomaly rate rule is off, so
  it stays "past its limit" instead of being suspended), while the good tester keeps sending
  its sequential GETs. Per flood: refusals per second and their statuses, the worker CPU per
  refusal (the worker's /proc CPU over the flood, minus the good tester's requests at the
  authorised cost) and its ratio to the authorised request, rows written per 1,000
  refusals (every table counted before and after, once the usage flusher has run), log
  bytes per 1,000 refusals (the gateway's stdout/stderr file, where its access log goes),
  the good tester's p50/p99 and non-200 answers during the flood, and what the per-address
  blocking did (429 ``too_many_failed_attempts`` answers).

With ``--compare-fast-refusals`` a second gateway on the same database runs with
``fast_refusals = false`` (every refusal through Flask; gateway/fast_refusal.py), and each
round measures both, the Flask-only one first, under rows labelled ``<front>/flask`` and
``<front>/fast``: the before and after of the fast path in one run. ``--compare-door`` does
the same for the door (gateway/process/door.py): a second gateway whose worker hands every
request to its thread pool (bench/serve.py's ``no-door``), rows ``<front>/pool`` and
``<front>/door``. ``--gateway-env`` passes other settings to all.

With ``--floor``, each nginx front also measures the floor no gateway can go below: the
same connections flood a location nginx answers with a 429 itself (``FRONT_REFUSES_PATH``),
so the gateway spends nothing on the flood and the good tester competes only with the
flooding client and nginx for the machine; first as fast as nginx answers
(``front_refuses``), then paced (wrk's ``delay()``) to the median rate at which the gateway
refused that round's floods (``front_refuses_paced``).

``--flood-rate N`` paces every flood to about N requests a second in all (each connection
waits ``connections / N`` seconds after each answer), so that the good tester's p99 can be
read against the size of a flood rather than only under one that takes all the gateway can
answer.

Targets (issue 22): a refusal costs at most 25% of an authorised request's worker CPU; the
good tester's p99 under any flood is at most 2x its quiet p99 behind nginx; the database
grows by no row per refused request (a bounded, aggregated counter only).

Bounded: every phase has a duration, every request a timeout, and a watchdog bounds the run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, inspect, select, table

from bench.harness import (
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    FRONT_REFUSES_PATH,
    HOST,
    Service,
    Stack,
    command_line,
    cpu_seconds,
    install_watchdog,
    machine_facts,
    nginx_binary,
    percentile,
    setting_pairs,
    start_front_proxy,
    write_json,
)
from bench.load import describe_tool, run_load, wrk_available

FLOODS = ("revoked_key", "random_keys", "no_key", "rate_limited_key")
# --floor (behind nginx): the flood answered by nginx itself, no gateway involved.
FRONT_REFUSES = "front_refuses"
FRONT_REFUSES_PACED = "front_refuses_paced"
REFUSAL_CPU_TARGET = 0.25
P99_TARGET = 2.0
LIMITED_COHORT = "flood-limited"
# How long the usage flusher (1 s interval) and the log writer get before rows are counted.
SETTLE_SECONDS = 2.5
# The gateway that sends every refusal through Flask, with --compare-fast-refusals.
FLASK_ONLY = "gateway-flask-refusals"
POOL_ONLY = "gateway-without-door"


# -- the keys of the flood ---------------------------------------------------------------


def prepare_flood_keys(settings_env: dict[str, str]) -> dict[str, str]:
    """A revoked key and a key limited to 1 request a minute, each of its own tester."""
    from gateway.settings import load_settings, root_secret_of
    from gateway.state import build_store
    from keys.access.vault import Vault
    from keys.limits.policies import Policy

    settings = load_settings(environ=settings_env)
    store = build_store(settings, Vault(root_secret_of(settings)))
    try:
        with store.transaction() as tx:
            tx.policies.set_policy(
                LIMITED_COHORT,
                Policy(requests_per_minute=1, requests_per_day=10**9, anomaly_rate_factor=0),
                "bench",
            )
            leaked = tx.testers.add("Leaky Tester", "leaky@example.com", "bench", cohort="bench")
            revoked = tx.keys.issue(leaked.id, "bench")
            limited_tester = tx.testers.add(
                "Busy Tester", "busy@example.com", "bench", cohort=LIMITED_COHORT
            )
            limited = tx.keys.issue(limited_tester.id, "bench")
        with store.transaction() as tx:
            tx.keys.revoke(revoked.key.id, "bench", "published in a public gist")
        return {"revoked": revoked.secret, "limited": limited.secret}
    finally:
        store.database.dispose()


def random_well_formed_keys(count: int, prefix: str = "drwb") -> list[str]:
    from keys.access.keyformat import KeyFormat

    key_format = KeyFormat(prefix)
    return [key_format.generate() for _ in range(count)]


def flood_headers(kind: str, keys: dict[str, str], random_keys: list[str]) -> list[dict[str, str]]:
    if kind == "revoked_key":
        return [{"Authorization": f"Bearer {keys['revoked']}"}]
    if kind == "random_keys":
        return [{"Authorization": f"Bearer {key}"} for key in random_keys]
    if kind == "no_key":
        return [{}]
    if kind == "rate_limited_key":
        return [{"Authorization": f"Bearer {keys['limited']}"}]
    raise ValueError(kind)


# -- what the database and the logs hold -------------------------------------------------


class RowCounter:
    """Rows in every table of the gateway's database."""

    def __init__(self, database_url: str) -> None:
        from keys.db import normalise_url

        self._engine = create_engine(normalise_url(database_url))
        self._tables = sorted(inspect(self._engine).get_table_names())

    def count(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            return {
                name: int(
                    connection.execute(select(func.count()).select_from(table(name))).scalar_one()
                )
                for name in self._tables
            }

    def close(self) -> None:
        self._engine.dispose()


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


# -- the good tester ---------------------------------------------------------------------


class GoodTester:
    """Sequential GETs with the good key over one keep-alive connection."""

    def __init__(self, port: int, path: str, key: str) -> None:
        self._port, self._path = port, path
        self._headers = {"Authorization": f"Bearer {key}"}

    def run(self, *, requests: int | None = None, until: float | None = None) -> dict[str, Any]:
        connection = http.client.HTTPConnection(HOST, self._port, timeout=30)
        timings: list[float] = []
        statuses: Counter[int] = Counter()
        try:
            while True:
                if requests is not None and len(timings) >= requests:
                    break
                if until is not None and time.monotonic() >= until:
                    break
                started = time.perf_counter()
                connection.request("GET", self._path, headers=self._headers)
                response = connection.getresponse()
                response.read()
                timings.append((time.perf_counter() - started) * 1000)
                statuses[response.status] += 1
                if response.will_close:
                    connection.close()
                    connection = http.client.HTTPConnection(HOST, self._port, timeout=30)
        finally:
            connection.close()
        timings.sort()
        return {
            "requests": len(timings),
            "p50_ms": percentile(timings, 0.50),
            "p99_ms": percentile(timings, 0.99),
            "statuses": dict(sorted(statuses.items())),
        }


# -- one front ---------------------------------------------------------------------------


def measure_front(
    name: str,
    front: Service,
    gateway: Service,
    stack: Stack,
    keys: dict[str, str],
    random_keys: list[str],
    rows: RowCounter,
    args: argparse.Namespace,
    use_wrk: bool,
) -> dict[str, Any]:
    path = f"/v1/videos/{stack.video_id}"
    worker = gateway.worker_pid()
    good = GoodTester(front.port, path, stack.tester_key)
    good.run(requests=args.warmup)
    quiet = good.run(requests=args.requests)

    def load(
        headers: list[dict[str, str]], target: str = path, delay_ms: int | None = None
    ) -> dict[str, Any]:
        return run_load(
            HOST,
            front.port,
            target,
            headers,
            duration=args.duration,
            connections=args.connections,
            wrk_threads=args.wrk_threads,
            use_wrk=use_wrk,
            delay_ms=delay_ms,
        )

    cpu_before = cpu_seconds(worker)
    authorised = load([{"Authorization": f"Bearer {stack.tester_key}"}])
    served = authorised["statuses"].get(200, 0) or authorised["requests"]
    authorised_cpu_us = (cpu_seconds(worker) - cpu_before) / max(served, 1) * 1e6
    authorised["worker_cpu_us_per_request"] = authorised_cpu_us
    time.sleep(SETTLE_SECONDS)

    floods: dict[str, Any] = {}

    def run_flood(
        kind: str,
        headers: list[dict[str, str]],
        target: str = path,
        delay_ms: int | None = None,
    ) -> None:
        rows_before = rows.count()
        log_before = gateway.log_path.stat().st_size
        cpu_before = cpu_seconds(worker)
        during: dict[str, Any] = {}
        until = time.monotonic() + args.duration

        def tester(until: float = until, during: dict[str, Any] = during) -> None:
            time.sleep(0.5)  # the flood is under way
            during.update(good.run(until=until - 0.5))

        thread = threading.Thread(target=tester, daemon=True)
        thread.start()
        flood = load(headers, target, delay_ms)
        thread.join(args.duration + 60)
        cpu_used = cpu_seconds(worker) - cpu_before
        time.sleep(SETTLE_SECONDS)
        rows_after = rows.count()
        log_after = gateway.log_path.stat().st_size
        refusals = sum(n for status, n in flood["statuses"].items() if status != 200)
        if not flood["statuses"]:
            refusals = flood["requests"] or 0
        flood_cpu = max(cpu_used - during.get("requests", 0) * authorised_cpu_us / 1e6, 0.0)
        per_refusal = flood_cpu / max(refusals, 1) * 1e6
        table_growth = grown(rows_before, rows_after)
        # The good tester's own requests write their usage events too.
        tester_rows = during.get("requests", 0)
        row_growth = sum(table_growth.values()) - tester_rows
        floods[kind] = {
            "load": flood,
            "refusals": refusals,
            "refusals_per_second": refusals / args.duration,
            "statuses": flood["statuses"],
            "blocked_by_address": flood["statuses"].get(429, 0)
            if kind != "rate_limited_key"
            else 0,
            "worker_cpu_us_per_refusal": per_refusal,
            "refusal_over_authorised_cpu": per_refusal / authorised_cpu_us,
            "rows_grown": table_growth,
            "rows_per_1000_refusals": row_growth / max(refusals, 1) * 1000,
            "log_bytes_per_1000_refusals": (log_after - log_before) / max(refusals, 1) * 1000,
            "good_tester": during,
            "good_p99_over_quiet": during.get("p99_ms", float("nan")) / quiet["p99_ms"],
        }
        if delay_ms is not None:
            floods[kind]["delay_ms"] = delay_ms
        print_flood(name, kind, floods[kind])
        # The next flood starts with the address block of this one over.
        if args.pause:
            time.sleep(args.pause)

    paced = pacing_delay_ms(args.connections, args.flood_rate) if args.flood_rate else None
    for kind in FLOODS:
        run_flood(kind, flood_headers(kind, keys, random_keys), delay_ms=paced)
    if args.floor and front is not gateway:
        # The floor: the same flood answered by the front itself, so that the gateway
        # spends nothing on it; first as fast as the front answers, then at the rate the
        # gateway refused this round's floods.
        run_flood(FRONT_REFUSES, [{}], FRONT_REFUSES_PATH)
        rate = statistics.median(floods[kind]["refusals_per_second"] for kind in FLOODS)
        run_flood(
            FRONT_REFUSES_PACED,
            [{}],
            FRONT_REFUSES_PATH,
            pacing_delay_ms(args.connections, rate),
        )
    return {"quiet": quiet, "authorised": authorised, "floods": floods}


def pacing_delay_ms(connections: int, rate: float) -> int:
    """The delay after each answer that holds ``connections`` to about ``rate`` requests a
    second in all (less when the answers themselves take long)."""
    return max(round(connections * 1000 / max(rate, 1.0)), 1)


# -- reporting ---------------------------------------------------------------------------


def print_flood(front: str, kind: str, row: dict[str, Any]) -> None:
    good, nan = row["good_tester"], float("nan")
    print(
        f"  {front:<12} {kind:<17} {row['refusals_per_second']:8.0f} refusals/s  "
        f"CPU {row['worker_cpu_us_per_refusal']:5.0f} us/refusal "
        f"({row['refusal_over_authorised_cpu']:4.2f}x authorised)  "
        f"rows/1000 {row['rows_per_1000_refusals']:7.1f}  "
        f"log B/1000 {row['log_bytes_per_1000_refusals']:8.0f}  "
        f"good p50 {good.get('p50_ms', nan):6.2f} p99 {good.get('p99_ms', nan):6.2f}"
        f" ms ({row['good_p99_over_quiet']:4.2f}x quiet)  statuses {row['statuses']}  "
        f"good statuses {good.get('statuses')}",
        flush=True,
    )


def summarise(rounds: list[dict[str, Any]], fronts: list[str]) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    summary: dict[str, Any] = {}
    for front in fronts:
        measured = [r[front] for r in rounds]
        rows = {
            "quiet_p50_ms": median([m["quiet"]["p50_ms"] for m in measured]),
            "quiet_p99_ms": median([m["quiet"]["p99_ms"] for m in measured]),
            "authorised_cpu_us": median(
                [m["authorised"]["worker_cpu_us_per_request"] for m in measured]
            ),
            "authorised_rps": median([m["authorised"]["rps"] for m in measured]),
            "floods": {},
        }
        for kind in measured[0]["floods"]:
            runs = [m["floods"][kind] for m in measured]
            rows["floods"][kind] = {
                name: median([run[name] for run in runs])
                for name in (
                    "refusals_per_second",
                    "worker_cpu_us_per_refusal",
                    "refusal_over_authorised_cpu",
                    "rows_per_1000_refusals",
                    "log_bytes_per_1000_refusals",
                    "blocked_by_address",
                    "good_p99_over_quiet",
                )
            }
            rows["floods"][kind]["good_p50_ms"] = median(
                [run["good_tester"].get("p50_ms", float("nan")) for run in runs]
            )
            rows["floods"][kind]["good_p99_ms"] = median(
                [run["good_tester"].get("p99_ms", float("nan")) for run in runs]
            )
            rows["floods"][kind]["good_refused"] = sum(
                sum(n for s, n in run["good_tester"].get("statuses", {}).items() if s != 200)
                for run in runs
            )
        summary[front] = rows
    return summary


def print_summary(summary: dict[str, Any], rounds: int) -> None:
    print(f"\nMedians of {rounds} round(s), GET /v1/videos/{{id}}")
    header = (
        f"{'front':<12} {'flood':<17} {'refusals/s':>10} {'CPU us/ref':>10} {'x auth':>7} "
        f"{'rows/1000':>9} {'log B/1000':>10} {'blocked':>8} {'good p50':>9} {'good p99':>9} "
        f"{'p99 x quiet':>11} {'good refused':>12}"
    )
    for front, rows in summary.items():
        print(
            f"\n{front}: quiet p50 {rows['quiet_p50_ms']:.2f} ms, p99 {rows['quiet_p99_ms']:.2f} "
            f"ms; authorised {rows['authorised_rps']:.0f} req/s at "
            f"{rows['authorised_cpu_us']:.0f} us worker CPU"
        )
        print(header)
        print("-" * len(header))
        for kind, row in rows["floods"].items():
            print(
                f"{front:<12} {kind:<17} {row['refusals_per_second']:10.0f} "
                f"{row['worker_cpu_us_per_refusal']:10.0f} "
                f"{row['refusal_over_authorised_cpu']:7.2f} {row['rows_per_1000_refusals']:9.1f} "
                f"{row['log_bytes_per_1000_refusals']:10.0f} {row['blocked_by_address']:8.0f} "
                f"{row['good_p50_ms']:9.2f} {row['good_p99_ms']:9.2f} "
                f"{row['good_p99_over_quiet']:11.2f} {row['good_refused']:12d}"
            )
    print()
    for front, rows in summary.items():
        gateway_floods = [rows["floods"][kind] for kind in FLOODS]
        worst_cpu = max(row["refusal_over_authorised_cpu"] for row in gateway_floods)
        worst_rows = max(row["rows_per_1000_refusals"] for row in gateway_floods)
        print(
            f"{front}: worst refusal CPU {worst_cpu:.2f}x authorised (target <= "
            f"{REFUSAL_CPU_TARGET}) {'PASS' if worst_cpu <= REFUSAL_CPU_TARGET else 'MISS'}; "
            f"worst rows per 1000 refusals {worst_rows:.1f}"
        )
        if front.startswith("nginx"):
            worst_p99 = max(row["good_p99_over_quiet"] for row in gateway_floods)
            print(
                f"{front}: worst good-tester p99 {worst_p99:.2f}x quiet (target <= {P99_TARGET}) "
                f"{'PASS' if worst_p99 <= P99_TARGET else 'MISS'}"
            )
            for kind in (FRONT_REFUSES, FRONT_REFUSES_PACED):
                if kind in rows["floods"]:
                    floor = rows["floods"][kind]
                    print(
                        f"{front}: floor ({kind}: nginx answers the flood itself, "
                        f"{floor['refusals_per_second']:.0f}/s): good-tester p99 "
                        f"{floor['good_p99_over_quiet']:.2f}x quiet"
                    )


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10, help="seconds per flood")
    parser.add_argument("--connections", type=int, default=32, help="flooding connections")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=500, help="quiet sequential GETs")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--random-keys", type=int, default=20_000, help="pool of made-up keys")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between floods")
    parser.add_argument("--front", choices=("both", "direct", "nginx"), default="both")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load client")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="DRAWBRIDGE_NAME=VALUE",
        help="a setting for the gateway(s), repeatable",
    )
    parser.add_argument(
        "--nginx-config",
        default=None,
        metavar="PATH",
        help="an nginx configuration to try instead of config/nginx.conf (an experiment)",
    )
    parser.add_argument(
        "--compare-fast-refusals",
        action="store_true",
        help="also run a gateway with fast_refusals = false and measure both each round",
    )
    parser.add_argument(
        "--compare-door",
        action="store_true",
        help="also run a gateway without the door (every refusal in a pool thread)",
    )
    parser.add_argument(
        "--flood-rate",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="pace every flood to about this many requests a second (wrk's delay()) "
        "instead of as fast as answers come",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="behind nginx, also flood a location nginx answers itself (the gateway's floor)",
    )
    parser.add_argument("--json", dest="json_path", default=None, metavar="PATH")
    parser.add_argument("--max-seconds", type=int, default=None, help="watchdog")
    args = parser.parse_args(argv)
    if args.compare_door and args.compare_fast_refusals:
        parser.error("one comparison at a time: --compare-door or --compare-fast-refusals")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fronts = ["direct", "nginx"] if args.front == "both" else [args.front]
    variants = (
        ["flask", "fast"]
        if args.compare_fast_refusals
        else ["pool", "door"]
        if args.compare_door
        else [""]
    )
    labels = [
        f"{front}/{variant}" if variant else front for front in fronts for variant in variants
    ]
    per_front = (len(FLOODS) + 3) * (args.duration + SETTLE_SECONDS + args.pause + 5) + 30
    install_watchdog(args.max_seconds or int(180 + args.rounds * len(labels) * per_front))
    use_wrk = not args.no_wrk and wrk_available()
    if "nginx" in fronts and nginx_binary() is None:
        raise SystemExit("nginx is not installed (make system-packages), or use --front direct")
    facts = machine_facts()
    print("Drawbridge leak-flood benchmark: GET /v1/videos/{id}")
    print(f"command: {command_line()}")
    print(
        f"machine: nproc={facts['nproc']} ({facts['cpu_model']}), Python {facts['python']} "
        f"({facts['implementation']}), {facts['platform']}, loadavg {facts['loadavg']}, "
        f"code {facts['code']['commit']} (changed: {facts['code']['changed_files'] or 'none'})"
    )
    print(
        f"load: {describe_tool(use_wrk, args.connections, args.duration, args.wrk_threads)}"
        + (
            f"; floods paced to ~{args.flood_rate:.0f}/s (each connection waits "
            f"{pacing_delay_ms(args.connections, args.flood_rate)} ms after an answer)"
            if args.flood_rate
            else ""
        )
    )
    random_keys = random_well_formed_keys(args.random_keys)
    rounds: list[dict[str, Any]] = []
    with Stack(
        workers=args.workers,
        threads=args.threads,
        database_url=args.database_url,
        with_passthrough=False,
        gateway_env={"DRAWBRIDGE_TRUSTED_PROXIES": "1", **setting_pairs(args.gateway_env)},
        extra_gateways=(
            {FLASK_ONLY: {"DRAWBRIDGE_FAST_REFUSALS": "false"}}
            if args.compare_fast_refusals
            else {POOL_ONLY: {"BENCH_PATCH": "no-door"}}
            if args.compare_door
            else {}
        ),
    ) as stack:
        keys = prepare_flood_keys(stack.settings_env)
        setup = stack.describe()
        print(
            f"servers: gateway under gunicorn {setup['worker_class']}, {setup['workers']} "
            f"worker(s) x {setup['threads']} threads, trusted_proxies = 1; database "
            f"{setup['database']}; nginx: {args.nginx_config or 'config/nginx.conf'}, 1 worker"
            + (f"; settings {setting_pairs(args.gateway_env)}" if args.gateway_env else "")
            + ("; fast_refusals off (flask) and on (fast)" if args.compare_fast_refusals else "")
            + ("; without the door (pool) and with it (door)" if args.compare_door else "")
        )
        gateways = {"": stack.gateway}
        if args.compare_fast_refusals:
            gateways = {"flask": stack.extras[FLASK_ONLY], "fast": stack.gateway}
        if args.compare_door:
            gateways = {"pool": stack.extras[POOL_ONLY], "door": stack.gateway}
        services: dict[str, tuple[Service, Service]] = {}
        for variant in variants:
            gateway = gateways[variant]
            for front in fronts:
                label = f"{front}/{variant}" if variant else front
                if front == "nginx":
                    proxy = start_front_proxy(
                        gateway.port,
                        config_path=Path(args.nginx_config) if args.nginx_config else None,
                        front_refuses=args.floor,
                    )
                    services[label] = (proxy, gateway)
                else:
                    services[label] = (gateway, gateway)
        rows = RowCounter(stack.database)
        try:
            for number in range(args.rounds):
                print(f"\nround {number + 1}")
                measured = {}
                for label in labels:
                    front_service, gateway = services[label]
                    measured[label] = measure_front(
                        label, front_service, gateway, stack, keys, random_keys, rows, args, use_wrk
                    )
                    quiet = measured[label]["quiet"]
                    auth = measured[label]["authorised"]
                    print(
                        f"  {label:<6} quiet p50 {quiet['p50_ms']:.2f} p99 {quiet['p99_ms']:.2f} "
                        f"ms; authorised {auth['rps']:.0f} req/s, "
                        f"{auth['worker_cpu_us_per_request']:.0f} us worker CPU/request",
                        flush=True,
                    )
                rounds.append(measured)
        finally:
            rows.close()
            for front_service, gateway in services.values():
                if front_service is not gateway:
                    front_service.stop()

    summary = summarise(rounds, labels)
    print_summary(summary, args.rounds)
    facts["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    print(f"\nloadavg at start {facts['loadavg']}, at end {facts['loadavg_end']}")
    if args.json_path:
        write_json(
            args.json_path,
            {
                "benchmark": "flood",
                "command": command_line(),
                "machine": facts,
                "setup": setup,
                "load_tool": "wrk" if use_wrk else "python-threads",
                "rounds": rounds,
                "summary": summary,
            },
        )
        print(f"results written to {args.json_path}")


if __name__ == "__main__":
    main()
