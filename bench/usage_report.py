"""The auditor's reports on a big usage log: ``python -m bench.usage_report``.

For SQLite (a temporary file) and PostgreSQL (a scratch database created on the server of
``--postgres-url`` and dropped at the end), or only for ``--database-url``:

1. generates ``--events`` usage events (default 1,000,000) over ``--days`` days for
   ``--testers`` testers, in bulk (``executemany`` on SQLite, ``COPY`` on PostgreSQL), with
   the daily totals that keys/records/usage.py would have kept (the same ``tally``), and
   ``--approvals`` decided approvals;
2. times the per-tester daily report over the last 30 days, median of ``--runs``:
   (a) the domain call on the ``usage_daily`` totals, (b) the same through HTTP
   (``GET /admin/v1/usage/daily`` in the Flask test client, auditor token checked), against
   (c) the baseline: the same report by GROUP BY over the raw events (what the daily totals
   replace), and checks (a) == (c). Target: under 200 ms;
3. times a few other auditor reads (a filtered page, a deep keyset page, a key's blast radius);
4. streams a CSV export of every event in a child process and reports events/s and the
   child's peak RSS growth, for 10% of the events and for all of them: flat memory means
   both growths are about the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from keys.db import normalise_url
from keys.migrate import upgrade
from keys.records.usage import DailyTotals, totals_of
from keys.records.usage_reports import UsageFilter, UsageReports

TARGET_MS = 200.0
CHUNK = 100_000
COLUMNS = (
    "at",
    "request_id",
    "key_id",
    "tester_id",
    "cohort",
    "method",
    "route",
    "video_id",
    "status",
    "outcome",
    "error_code",
    "generations",
    "video_seconds",
    "latency_ms",
    "upstream_latency_ms",
    "client_ip",
    "user_agent",
)
ROUTES = [
    ("POST", "/v1/videos", 0.25),
    ("GET", "/v1/videos/<video_id>", 0.45),
    ("GET", "/v1/videos", 0.1),
    ("GET", "/v1/videos/<video_id>/content", 0.15),
    ("GET", "/v1/me", 0.05),
]
AGENTS = ["OpenAI/Python 3.57.0", "curl/8.5.0", "python-requests/2.32.3", "Mozilla/5.0"]
ROOT_SECRET = "YmVuY2gtcm9vdC1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaC0xMjM0NTY3OA=="
MIB = 1024 * 1024


# -- data ----------------------------------------------------------------------------------


def _cohort(tester_id: str) -> str:
    return f"cohort{int(tester_id[-6:]) % 4}"


def _event(rng: random.Random, at: datetime, testers: list[str], n: int) -> dict[str, Any]:
    tester = rng.choice(testers)
    cohort = _cohort(tester)
    method, route = rng.choices([(m, r) for m, r, _ in ROUTES], [w for *_, w in ROUTES])[0]
    roll = rng.random()
    status, outcome, error = 200, "ok", None
    generations = seconds = 0
    if roll < 0.04:
        status, outcome, error = 429, "refused", "rate_limit_exceeded"
    elif roll < 0.06:
        status, outcome, error = 401, "refused", "key_revoked"
    elif roll < 0.065:
        status, outcome, error = 502, "failed", "upstream_error"
    elif route == "/v1/videos" and method == "POST":
        generations, seconds = 1, rng.choice([4, 8, 12])
        outcome = "refunded" if roll > 0.98 else "created"
    return {
        "at": at,
        "request_id": f"req_{n:012d}{secrets.token_hex(10)}",
        "key_id": f"key_{tester[4:]}{rng.randrange(2)}",
        "tester_id": tester,
        "cohort": cohort,
        "method": method,
        "route": route,
        "video_id": f"video_{rng.getrandbits(64):016x}" if "video_id" in route else None,
        "status": status,
        "outcome": outcome,
        "error_code": error,
        "generations": generations,
        "video_seconds": seconds,
        "latency_ms": round(rng.uniform(2, 80), 2),
        "upstream_latency_ms": round(rng.uniform(1, 60), 2),
        "client_ip": f"203.0.113.{rng.randrange(1, 255)}",
        "user_agent": rng.choice(AGENTS),
    }


def _chunks(
    events: int, days: int, testers: list[str], today: date, seed: int
) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    start = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), UTC)
    span = days * 86_400
    # Time order, as a live log is written (ids grow with time).
    offsets = sorted(rng.random() * span for _ in range(events))
    for first in range(0, events, CHUNK):
        yield [
            _event(rng, start + timedelta(seconds=offsets[n]), testers, n)
            for n in range(first, min(first + CHUNK, events))
        ]


def _sqlite_text(at: datetime) -> str:
    # What keys/db.py UTCDateTime stores on SQLite.
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def populate(url: str, events: int, days: int, testers: int, approvals: int) -> dict[str, Any]:
    """Fill a migrated database; returns what was made and how long it took."""
    engine = create_engine(normalise_url(url))
    dialect = engine.dialect.name
    today = datetime.now(UTC).date()
    tester_ids = [f"tst_bench{n:06d}" for n in range(testers)]
    started = time.perf_counter()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO testers (id, name, email, cohort, status, created_at, created_by) "
                "VALUES (:id, :id, :email, :cohort, 'active', :at, 'bench')"
            ),
            [
                {"id": t, "email": f"{t}@example.com", "cohort": _cohort(t), "at": now}
                for t in tester_ids
            ],
        )
        connection.execute(
            text(
                "INSERT INTO api_keys (id, tester_id, digest, hint, status, created_at, "
                "created_by, metadata) VALUES (:id, :tester, :digest, 'drwb_...bench', "
                "'active', :at, 'bench', '{}')"
            ),
            [
                {
                    "id": f"key_{t[4:]}{k}",
                    "tester": t,
                    "digest": secrets.token_hex(32),
                    "at": now - timedelta(days=days + 1),
                }
                for t in tester_ids
                for k in range(2)
            ],
        )
    changes: dict[Any, dict[str, int]] = {}
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for chunk in _chunks(events, days, tester_ids, today, seed=42):
            for key, counts in totals_of(chunk).items():
                into = changes.setdefault(key, dict.fromkeys(counts, 0))
                for name, value in counts.items():
                    into[name] += value
            if dialect == "postgresql":
                with cursor.copy(f"COPY usage_events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for event in chunk:
                        copy.write_row([event[c] for c in COLUMNS])
            else:
                rows = [
                    tuple(_sqlite_text(e[c]) if c == "at" else e[c] for c in COLUMNS) for e in chunk
                ]
                cursor.execute("BEGIN")
                cursor.executemany(
                    f"INSERT INTO usage_events ({', '.join(COLUMNS)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' * len(COLUMNS))})",
                    rows,
                )
                cursor.execute("COMMIT")
            raw.commit()
        raw.commit()
    finally:
        raw.close()
    rng = random.Random(7)
    decisions = []
    for n in range(approvals):
        decided = now - timedelta(seconds=rng.random() * days * 86_400)
        decisions.append(
            {
                "id": f"apr_bench{n:08d}",
                "status": "approved" if rng.random() < 0.8 else "rejected",
                "tester": rng.choice(tester_ids),
                "video": f"video_bench{n}",
                "created": decided - timedelta(minutes=5),
                "decided": decided,
            }
        )
    with Session(engine) as session, session.begin():
        DailyTotals(session).add(changes)
        session.execute(
            text(
                "INSERT INTO approvals (id, kind, status, tester_id, key_id, video_id, "
                "held_because, request, created_at, decided_at, decided_by) VALUES (:id, "
                "'generation', :status, :tester, 'key_bench', :video, 'rule', '{}', :created, "
                ":decided, 'approver:bench')"
            ),
            decisions,
        )
    # Fresh statistics, as autovacuum (PostgreSQL) or `PRAGMA optimize` would keep them.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return {
        "events": events,
        "testers": testers,
        "days": days,
        "approvals": approvals,
        "daily_rows": len(changes),
        "populate_seconds": round(time.perf_counter() - started, 1),
    }


# -- timings -------------------------------------------------------------------------------


def median_ms(function: Callable[[], Any], runs: int, warmup: int = 1) -> tuple[float, Any]:
    result = None
    for _ in range(warmup):
        result = function()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), result


def time_reports(url: str, runs: int) -> dict[str, Any]:
    from gateway.app import create_app
    from gateway.settings import load_settings
    from gateway.state import build_state

    settings = load_settings(
        environ={},
        database_url=url,
        root_secret=ROOT_SECRET,
        upstream_api_key="sk-bench-unused",
        log_level="WARNING",
    )
    state = build_state(settings)
    app = create_app(state=state)
    with state.store.transaction() as tx:
        auditor = tx.tokens.create("bench auditor", "auditor", "bench").secret
    client = app.test_client()
    headers = {"Authorization": f"Bearer {auditor}"}
    today = datetime.now(UTC).date()
    first = today - timedelta(days=29)
    results: dict[str, Any] = {}
    with state.store.read() as tx:
        reports: UsageReports = tx.usage_reports
        results["daily_30d_ms"], rows = median_ms(lambda: reports.daily(first, today), runs)
        results["daily_30d_rows"] = len(rows)
        results["daily_one_tester_ms"], _ = median_ms(
            lambda: reports.daily(first, today, tester_id="tst_bench000007"), runs
        )
        results["daily_366d_ms"], long_rows = median_ms(
            lambda: reports.daily(today - timedelta(days=365), today), max(runs // 2, 3)
        )
        results["daily_366d_rows"] = len(long_rows)
        baseline_runs = max(min(runs, 5), 3)
        results["baseline_group_by_ms"], baseline = median_ms(
            lambda: reports.daily_from_events(first, today), baseline_runs, warmup=1
        )
        results["baseline_equals_rollup"] = baseline == rows

        page_filter = UsageFilter(tester_id="tst_bench000007")
        results["page_tester_ms"], _ = median_ms(lambda: reports.page(page_filter, None, 100), runs)
        since_filter = UsageFilter(since=datetime.now(UTC) - timedelta(days=3), status="4xx")
        results["page_since_4xx_ms"], _ = median_ms(
            lambda: reports.page(since_filter, None, 100), runs
        )
        deep = reports.page(page_filter, None, 1000)[0][-1]["id"]
        results["page_tester_after_1000_ms"], _ = median_ms(
            lambda: reports.page(page_filter, deep, 100), runs
        )
        results["key_report_ms"], report = median_ms(
            lambda: reports.key_report("key_bench0000070", None, None), max(runs // 2, 3)
        )
        results["key_report_requests"] = report.requests

    def http_daily() -> Any:
        response = client.get("/admin/v1/usage/daily", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    results["http_daily_30d_ms"], _ = median_ms(http_daily, runs)
    state.store.database.dispose()
    return results


def time_export(url: str, fraction: float) -> dict[str, Any]:
    """Run the export in a fresh child process, so its peak RSS is the export's alone."""
    output = subprocess.run(
        [sys.executable, "-m", "bench.usage_report", "--export-child", url, str(fraction)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def export_child(url: str, fraction: float) -> None:
    from gateway.presenters import csv_chunks

    engine = create_engine(normalise_url(url))
    with Session(engine) as session:
        first = session.execute(text("SELECT MIN(at), MAX(at) FROM usage_events")).one()
        low, high = (_as_datetime(value) for value in first)
        until = low + (high - low) * fraction + timedelta(microseconds=1)
        usage_filter = UsageFilter(until=until)
        reports = UsageReports(session, lambda: datetime.now(UTC))
        list(reports.page(usage_filter, None, 10))  # imports and connection warm
        start_rss = peak_rss = _rss_mib()
        events = size = 0

        def counted() -> Iterator[dict[str, Any]]:
            nonlocal events
            for event in reports.stream(usage_filter):
                events += 1
                yield event

        started = time.perf_counter()
        for chunk in csv_chunks(counted()):
            size += len(chunk)  # a 64 KiB chunk, as the HTTP response sends it
            peak_rss = max(peak_rss, _rss_mib())
        seconds = time.perf_counter() - started
    engine.dispose()
    print(
        json.dumps(
            {
                "events": events,
                "seconds": round(seconds, 2),
                "events_per_second": round(events / seconds),
                "mib": round(size / MIB, 1),
                "rss_start_mib": round(start_rss, 1),
                "rss_growth_mib": round(peak_rss - start_rss, 1),
                "ru_maxrss_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            }
        )
    )


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


# -- databases -----------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(backend: str, postgres_url: str, directory: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a PostgreSQL database dropped after."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'usage-bench.db'}"
    else:
        admin = create_engine(normalise_url(postgres_url), isolation_level="AUTOCOMMIT")
        name = f"drawbridge_bench_{secrets.token_hex(5)}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(normalise_url(url))
    try:
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        if backend != "sqlite":
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def run(backend: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {backend}: {args.events:,} events ({_load()}) ==", flush=True)
    made = populate(url, args.events, args.days, args.testers, args.approvals)
    print(
        f"generated {made['events']:,} events, {made['daily_rows']:,} daily rows, "
        f"{made['approvals']:,} approvals in {made['populate_seconds']} s",
        flush=True,
    )
    timings = time_reports(url, args.runs)
    verdict = "OK" if timings["http_daily_30d_ms"] < TARGET_MS else "OVER TARGET"
    print(
        f"daily report, 30 days x {args.testers} testers ({timings['daily_30d_rows']:,} rows):\n"
        f"  domain      {timings['daily_30d_ms']:8.1f} ms (median of {args.runs})\n"
        f"  HTTP        {timings['http_daily_30d_ms']:8.1f} ms  target < {TARGET_MS:.0f} ms: "
        f"{verdict}\n"
        f"  baseline    {timings['baseline_group_by_ms']:8.1f} ms  GROUP BY over the raw events "
        f"({timings['baseline_group_by_ms'] / timings['daily_30d_ms']:.0f}x slower; "
        f"same rows: {timings['baseline_equals_rollup']})\n"
        f"  one tester  {timings['daily_one_tester_ms']:8.1f} ms\n"
        f"  366 days    {timings['daily_366d_ms']:8.1f} ms ({timings['daily_366d_rows']:,} rows)\n"
        f"other reads:\n"
        f"  page, one tester              {timings['page_tester_ms']:8.1f} ms\n"
        f"  page, one tester, after 1000  {timings['page_tester_after_1000_ms']:8.1f} ms\n"
        f"  page, last 3 days, 4xx        {timings['page_since_4xx_ms']:8.1f} ms\n"
        f"  key blast radius ({timings['key_report_requests']:,} events) "
        f"{timings['key_report_ms']:8.1f} ms",
        flush=True,
    )
    exports = {}
    for fraction in (0.1, 1.0):
        exports[fraction] = result = time_export(url, fraction)
        print(
            f"export CSV {result['events']:>9,} events: {result['events_per_second']:>7,} "
            f"events/s, {result['mib']} MiB, peak RSS growth {result['rss_growth_mib']} MiB",
            flush=True,
        )
    print(f"({_load()})", flush=True)
    return {"populate": made, "reports": timings, "export": exports, "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--testers", type=int, default=200)
    parser.add_argument("--approvals", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--database-url",
        default=None,
        help="measure only this (empty, migrated) database instead of SQLite and PostgreSQL",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "DRAWBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="server on which the PostgreSQL scratch database is created (and dropped)",
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--export-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        export_child(args.export_child[0], float(args.export_child[1]))
        return
    results = {}
    if args.database_url:
        results["given"] = run("given database", args.database_url, args)
    else:
        with tempfile.TemporaryDirectory(prefix="drawbridge-usage-bench-") as directory:
            for backend in args.backends.split(","):
                with scratch_database(backend, args.postgres_url, Path(directory)) as url:
                    results[backend] = run(backend, url, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
