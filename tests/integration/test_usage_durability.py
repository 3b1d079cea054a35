"""The usage log under real gunicorn processes, on SQLite and PostgreSQL.

- A graceful stop (SIGTERM) writes every batched event: with the periodic flush pushed out
  to an hour, nothing is in the database before the stop and everything is after it. Meanwhile
  every worker answers ``/metrics`` for all workers.
- ``kill -9`` of a worker under load, then a graceful stop and a restart: every admitted
  billable request has its usage event, every video its billable event, the daily totals
  equal a recount of the events, and ``drawbridge audit verify`` passes.
- A grep of the database, the gateway's log, CSV/JSONL exports (CLI and API) and
  ``/metrics`` for every raw key and token issued during the test finds nothing.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from keys.access.keyformat import KeyFormat
from keys.db import Base, normalise_url
from keys.records.usage_reports import UsageReports
from tests.integration.fleet import gateway_fleet, query
from tests.integration.live import (
    HTTP_TIMEOUT,
    LiveGateway,
    LiveSimulator,
    access_lines,
    access_record,
    child_pids,
    http_session,
    is_alive,
    start_gateway,
    wait_for,
)

pytestmark = pytest.mark.integration

GENEROUS = {
    "generations_per_day": 100_000,
    "concurrent_jobs": 100_000,
    "requests_per_minute": 100_000,
    "requests_per_day": 1_000_000,
    "video_seconds_per_day": 1_000_000,
    "video_seconds_per_month": 1_000_000,
    "anomaly_rate_factor": 0,
    "anomaly_max_client_ips": 0,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, url) of a fresh database."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'drawbridge.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_postgres_database")
    return "postgresql", make()


def _gateway(
    simulator: LiveSimulator, tmp: Path, database: tuple[str, str], **settings: str
) -> Any:
    backend, url = database
    return gateway_fleet(
        simulator,
        tmp,
        url,
        instances=1,
        workers=2,
        migrate=backend == "sqlite",
        **settings,
    )


def count_events(database_url: str, request_ids: list[str]) -> int:
    found = {row[0] for row in query(database_url, "SELECT request_id FROM usage_events")}
    return len(found & set(request_ids))


def scrape(gateway: LiveGateway) -> str:
    with http_session() as session:
        response = session.get(f"{gateway.base}/metrics", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.text


def requests_counted(metrics: str, route: str) -> int:
    pattern = re.compile(
        rf'^drawbridge_http_requests_total\{{route="{re.escape(route)}",.*\}} (\d+)$'
    )
    return sum(int(m.group(1)) for line in metrics.splitlines() if (m := pattern.match(line)))


def answering_workers(gateway: LiveGateway, path: str) -> set[str]:
    """Worker pids in the test's gunicorn access log (tests/integration/live.py)."""
    return set(
        re.findall(
            rf'gunicorn-access pid=<?(\d+)>? "GET {re.escape(path)}"',
            "\n".join(access_lines(gateway.log_path.read_text())),
        )
    )


# -- graceful stop ---------------------------------------------------------------------------


def test_a_graceful_stop_writes_every_batched_event_and_refusal_count(
    simulator: LiveSimulator, database: tuple[str, str], tmp_path: Path
) -> None:
    """Admitted requests are events; refusals before admission (no key, a made-up key, a
    revoked key) are counted per day, key and code, exactly, across both workers."""
    _, url = database
    with _gateway(
        simulator,
        tmp_path,
        database,
        DRAWBRIDGE_USAGE_FLUSH_SECONDS="3600",
        DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE="1000",
    ) as [gateway]:
        key = gateway.new_tester_key()
        revoked = gateway.new_tester_key()
        gateway.admin_ok("POST", f"/keys/{revoked.key_id}/revoke", json={"reason": "leaked"})
        made_up = KeyFormat("drwb").generate()
        senders = [
            {"Authorization": f"Bearer {key.secret}"},
            {},
            {"Authorization": f"Bearer {made_up}"},
            {"Authorization": f"Bearer {revoked.secret}"},
        ]
        request_ids = []
        for n in range(80):
            with http_session() as session:  # a new connection each: both workers answer
                response = session.get(
                    f"{gateway.api_url}/me", headers=senders[n % 4], timeout=HTTP_TIMEOUT
                )
            assert response.status_code == (200 if n % 4 == 0 else 401)
            if n % 4 == 0:
                request_ids.append(response.headers["x-request-id"])
        assert len(set(request_ids)) == 20
        assert count_events(url, request_ids) == 0  # all still in the workers' buffers
        assert query(url, "SELECT COUNT(*) FROM usage_refusals")[0][0] == 0

        # Any worker answers /metrics for both (each publishes its counts every second).
        assert len(answering_workers(gateway, "/v1/me")) == 2
        time.sleep(1.5)
        assert {requests_counted(scrape(gateway), "/v1/me") for _ in range(8)} == {80}

        assert gateway.process is not None
        gateway.process.stop()
        assert gateway.process.popen.returncode == 0

    assert count_events(url, request_ids) == 20
    assert query(url, "SELECT COUNT(*) FROM usage_events")[0][0] == 20  # no refusal events
    counted = {
        (key_id, code, status, route): int(requests)
        for key_id, code, status, route, requests in query(
            url,
            "SELECT key_id, error_code, status, route, SUM(requests) FROM usage_refusals "
            "GROUP BY key_id, error_code, status, route",
        )
    }
    assert counted == {
        ("", "missing_api_key", 401, "/v1/me"): 20,
        ("", "invalid_api_key", 401, "/v1/me"): 20,
        (revoked.key_id, "key_revoked", 401, "/v1/me"): 20,
    }
    keyless = query(url, "SELECT requests, rejections FROM usage_daily WHERE tester_id = ''")
    assert [tuple(row) for row in keyless] == [(60, 60)]


# -- kill -9 under load ----------------------------------------------------------------------


class Load:
    """Client threads creating videos (billable) and reading /v1/me, until stopped."""

    def __init__(self, gateway: LiveGateway, secrets: list[str], threads: int = 6) -> None:
        self.gateway = gateway
        self.secrets = secrets
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (request id, status, video id) of every create that got an answer
        self.creates: list[tuple[str, int, str | None]] = []
        self.broken = 0  # connections the kill cut
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.secrets[n % len(self.secrets)]}"}
        while not self.stop.is_set():
            with http_session() as session:
                try:
                    response = session.post(
                        f"{self.gateway.api_url}/videos",
                        json={"prompt": f"load {n}", "seconds": "4"},
                        headers=headers,
                        timeout=HTTP_TIMEOUT,
                    )
                    body = response.json() if response.status_code == 200 else {}
                    with self.lock:
                        self.creates.append(
                            (response.headers["x-request-id"], response.status_code, body.get("id"))
                        )
                    session.get(f"{self.gateway.api_url}/me", headers=headers, timeout=HTTP_TIMEOUT)
                except requests.RequestException:
                    with self.lock:
                        self.broken += 1

    def admitted(self) -> int:
        with self.lock:
            return sum(1 for _, status, _ in self.creates if status == 200)


def test_kill_9_under_load_loses_no_billable_event_and_leaks_no_key(
    simulator: LiveSimulator, database: tuple[str, str], tmp_path: Path
) -> None:
    backend, url = database
    with _gateway(simulator, tmp_path, database) as [gateway]:
        gateway.issued_secrets.append(gateway.admin_token)
        keys = [gateway.new_tester_key() for _ in range(3)]
        for key in keys:
            gateway.admin_ok("PUT", f"/testers/{key.tester_id}/policy", json=GENEROUS)
        auditor = gateway.admin_ok("POST", "/tokens", json={"name": "auditor", "role": "auditor"})
        gateway.issued_secrets.append(auditor["secret"])
        assert gateway.process is not None
        master = gateway.process.pid

        with Load(gateway, [key.secret for key in keys]) as load:
            wait_for(lambda: load.admitted() >= 20, 30, "creates before the kill")
            victim = min(child_pids(master))
            os.kill(victim, signal.SIGKILL)
            before = load.admitted()
            # Admin actions while a worker is down and another respawns: audit appends.
            spare = gateway.new_tester_key()
            gateway.admin_ok("POST", f"/keys/{spare.key_id}/revoke", json={"reason": "drill"})
            wait_for(lambda: not is_alive(victim), 10, "the killed worker to be gone")
            wait_for(lambda: len(child_pids(master)) == 2, 30, "gunicorn to replace the worker")
            wait_for(lambda: load.admitted() >= before + 20, 30, "creates after the kill")

        # Secrets where clients should never put them: a header and a path.
        leaky = keys[0].secret
        with http_session() as session:
            for path in (f"/videos/{leaky}", f"/videos/x_{leaky}", "/me"):
                session.get(
                    f"{gateway.api_url}{path}",
                    headers={"Authorization": f"Bearer {leaky}", "User-Agent": f"bot {leaky}"},
                    timeout=HTTP_TIMEOUT,
                )

        gateway.process.stop()
        assert gateway.process.popen.returncode == 0
        # Restart on the same database: it serves, and its events join the others.
        restart = tmp_path / "restart"
        restart.mkdir()
        gateway.process = start_gateway(gateway, int(gateway.base.rsplit(":", 1)[1]), restart)
        after_restart = gateway.tester_get("/me", keys[1].secret)
        assert after_restart.status_code == 200
        after_id = after_restart.headers["x-request-id"]
        wait_for(lambda: count_events(url, [after_id]) == 1, 10, "the periodic flush")

        exports = _exports(gateway, tmp_path, auditor["secret"])
        metrics = scrape(gateway)
        gateway.process.stop()

    # Every admitted billable request has its event, with what the client was told.
    admitted = {rid: video for rid, status, video in load.creates if status == 200}
    assert len(admitted) >= 40
    events = {
        row[0]: row[1:]
        for row in query(
            url,
            "SELECT request_id, outcome, generations, video_id FROM usage_events "
            "WHERE generations > 0",
        )
    }
    missing = set(admitted) - set(events)
    assert not missing, f"{len(missing)} admitted creates have no usage event"
    for request_id, video_id in admitted.items():
        assert events[request_id] == ("created", 1, video_id)
    # ... and so does every video, including any whose client the kill cut off.
    billed_videos = {video for _, _, video in events.values()}
    videos = {row[0] for row in query(url, "SELECT id FROM videos")}
    assert videos <= billed_videos
    assert "OK:" in gateway.cli("audit", "verify")
    _assert_daily_totals_match_events(url)
    _assert_no_secret_anywhere(gateway, backend, url, [*exports, metrics])


def _exports(gateway: LiveGateway, tmp: Path, auditor_secret: str) -> list[str]:
    texts = []
    for format in ("csv", "jsonl"):
        target = tmp / f"usage.{format}"
        gateway.cli("usage", "export", "--format", format, "--output", str(target))
        texts.append(target.read_text())
        with http_session() as session:
            response = session.get(
                f"{gateway.base}/admin/v1/usage/export?format={format}",
                headers={"Authorization": f"Bearer {auditor_secret}"},
                timeout=HTTP_TIMEOUT,
            )
        assert response.status_code == 200
        texts.append(response.text)
    # At least the 40 admitted creates the caller asserts (how many more requests the load
    # phase made depends on the machine's load).
    assert texts[0].count("\n") == texts[1].count("\n") > 40
    assert "[REDACTED]" in texts[0]
    return texts


def _assert_daily_totals_match_events(url: str) -> None:
    engine = create_engine(normalise_url(url))
    try:
        with Session(engine) as session:
            reports = UsageReports(session, lambda: datetime.now(UTC))
            today = datetime.now(UTC).date()
            first, last = today - timedelta(days=1), today + timedelta(days=1)
            daily = reports.daily(first, last)
            assert daily == reports.daily_from_events(first, last)
            assert sum(row.requests for row in daily) > 40
    finally:
        engine.dispose()


def _database_text(backend: str, url: str) -> Iterator[bytes]:
    if backend == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm", "-journal"):
            candidate = Path(f"{path}{suffix}")
            if candidate.exists():
                yield candidate.read_bytes()
        return
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                # Table names come from our own metadata.
                sql = f'SELECT CAST(t AS text) FROM "{table.name}" t'  # noqa: S608
                rows = connection.execute(text(sql))
                yield "\n".join(row[0] for row in rows).encode()
    finally:
        engine.dispose()


def _assert_no_secret_anywhere(
    gateway: LiveGateway, backend: str, url: str, outputs: list[str]
) -> None:
    # The test's own gunicorn access log (live.py GUNICORN_TEST_CONFIG) prints raw paths, one
    # of which carried a key on purpose; the product's configuration has it off
    # (gateway/process/server.py). Everything the gateway itself logged is checked.
    log = "\n".join(
        line
        for line in gateway.log_path.read_text(errors="replace").splitlines()
        if access_record(line) is None
    )
    places = {"log": log.encode(), **{f"output {n}": o.encode() for n, o in enumerate(outputs)}}
    for n, blob in enumerate(_database_text(backend, url)):
        places[f"database part {n}"] = blob
    assert len(gateway.issued_secrets) >= 6
    for secret in gateway.issued_secrets:
        for place, blob in places.items():
            assert secret.encode() not in blob, f"a raw secret is in the {place}"
