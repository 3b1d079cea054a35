"""Exact quotas across processes: 50 concurrent creates against a remaining quota of 10
generations, through several gunicorn workers (SQLite) and several gateway instances
sharing one PostgreSQL database. Exactly 10 are admitted; the ledger equals what was admitted.

The creates are spread over every worker by the test, not left to the kernel's choice of
which worker accepts a connection (under load it can give one worker all of them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.fleet import gateway_fleet, query
from tests.integration.live import (
    HTTP_TIMEOUT,
    LiveGateway,
    LiveSimulator,
    access_lines,
    child_pids,
    connections_to,
    http_session,
    wait_for,
)

pytestmark = pytest.mark.integration

ATTEMPTS = 50
REMAINING = 10
ALREADY_USED = 2
SECONDS = 4
SQLITE_WORKERS = 4
POSTGRES_WORKERS = 2  # per instance


@pytest.fixture(scope="module")
def sqlite_fleet(
    simulator: LiveSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LiveGateway]]:
    tmp = tmp_path_factory.mktemp("quota-sqlite")
    with gateway_fleet(
        simulator, tmp, f"sqlite:///{tmp / 'drawbridge.db'}", instances=1, workers=SQLITE_WORKERS,
    ) as gateways:  # fmt: skip
        yield gateways


@pytest.fixture(scope="module")
def postgres_fleet(
    simulator: LiveSimulator,
    tmp_path_factory: pytest.TempPathFactory,
    make_postgres_database: Callable[[], str],
) -> Iterator[list[LiveGateway]]:
    tmp = tmp_path_factory.mktemp("quota-postgres")
    with gateway_fleet(
        simulator, tmp, make_postgres_database(), instances=2, workers=POSTGRES_WORKERS,
        migrate=False,
    ) as gateways:  # fmt: skip
        yield gateways


def prepare_tester(gateway: LiveGateway) -> tuple[str, str]:
    """A tester whose day already used ALREADY_USED of ALREADY_USED + REMAINING generations,
    with every other limit out of the way. Returns (tester id, key secret)."""
    key = gateway.new_tester_key()
    gateway.admin_ok(
        "PUT",
        f"/testers/{key.tester_id}/policy",
        json={
            "generations_per_day": ALREADY_USED + REMAINING,
            "concurrent_jobs": 1000,
            "requests_per_minute": 10_000,
            "requests_per_day": 100_000,
            "video_seconds_per_day": 100_000,
            "video_seconds_per_month": 100_000,
        },
    )
    with http_session() as session:
        for _ in range(ALREADY_USED):
            response = session.post(
                f"{gateway.api_url}/videos",
                json={"prompt": "warming up", "seconds": str(SECONDS)},
                headers={"Authorization": f"Bearer {key.secret}"},
                timeout=HTTP_TIMEOUT,
            )
            assert response.status_code == 200, response.text
    return key.tester_id, key.secret


@dataclass
class Answer:
    """An HTTP answer read off a raw socket."""

    status_code: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def create_request(gateway: LiveGateway, secret: str, index: int) -> bytes:
    body = json.dumps({"prompt": f"race {index}", "seconds": str(SECONDS)}).encode()
    head = (
        "POST /v1/videos HTTP/1.1\r\n"
        f"Host: {gateway.base.removeprefix('http://')}\r\n"
        f"Authorization: Bearer {secret}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode() + body


def read_answer(sock: socket.socket) -> Answer:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def workers_of(gateway: LiveGateway, workers: int) -> list[int]:
    assert gateway.process is not None
    master = gateway.process.pid
    # Ready means one worker answers; the others may still be booting on a loaded machine.
    wait_for(lambda: len(child_pids(master)) == workers, 30, "every worker to be up")
    return sorted(child_pids(master))


def accepted_by(pid: int, sock: socket.socket) -> bool:
    """Whether worker ``pid`` holds the server end of the connection ``sock``."""
    return connections_to(pid, sock.getsockname()[1]) == 1


def pinned_requests(
    gateways: list[LiveGateway], workers: int, secret: str
) -> list[tuple[socket.socket, bytes, int]]:
    """ATTEMPTS creates, each sent but for its last byte on its own connection, spread evenly
    over every worker of every gateway: (socket, the byte still to send, worker pid).

    The kernel gives a connection to whichever worker accepts first, and may give one worker
    all of them. So each worker takes its share alone: its siblings are stopped (SIGSTOP)
    until it has accepted every connection of its share. A worker then holds its connections
    whatever happens next; the requests wait for their last byte, in its threads or queued.
    """
    slots = [(gateway, pid) for gateway in gateways for pid in workers_of(gateway, workers)]
    pinned: list[tuple[socket.socket, bytes, int]] = []
    for number, (gateway, pid) in enumerate(slots):
        share = ATTEMPTS // len(slots) + (number < ATTEMPTS % len(slots))
        siblings = [other for other in workers_of(gateway, workers) if other != pid]
        port = int(gateway.base.rsplit(":", 1)[1])
        for sibling in siblings:
            os.kill(sibling, signal.SIGSTOP)
        try:
            for _ in range(share):
                request = create_request(gateway, secret, len(pinned))
                sock = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT * 2)
                sock.sendall(request[:-1])
                pinned.append((sock, request[-1:], pid))
                wait_for(
                    partial(accepted_by, pid, sock),
                    15,
                    f"worker {pid} to accept a connection",
                    interval=0.005,
                )
        finally:
            for sibling in siblings:
                os.kill(sibling, signal.SIGCONT)
    return pinned


def race(gateways: list[LiveGateway], workers: int, secret: str) -> list[Answer]:
    """ATTEMPTS creates at once, one thread and connection each, spread evenly over every
    worker of every gateway (``pinned_requests``); each thread sends its last byte at the
    same moment."""
    pinned = pinned_requests(gateways, workers, secret)
    assert len(pinned) == ATTEMPTS
    barrier = threading.Barrier(ATTEMPTS)
    results: list[Answer | BaseException] = [RuntimeError("not run")] * ATTEMPTS

    def create(index: int) -> None:
        sock, last, _ = pinned[index]
        try:
            with sock:
                barrier.wait(timeout=30)
                sock.sendall(last)
                results[index] = read_answer(sock)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=create, args=(i,)) for i in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    return [r for r in results if isinstance(r, Answer)]


def ledger(database_url: str, tester_id: str) -> dict[str, int]:
    rows = query(
        database_url,
        "SELECT metric, SUM(used) FROM quota_usage WHERE tester_id = :tester GROUP BY metric",
        tester=tester_id,
    )
    return {metric: int(used) for metric, used in rows}


def count(database_url: str, sql: str, tester_id: str) -> int:
    (row,) = query(database_url, sql, tester=tester_id)
    return int(row[0])


def assert_exact(
    gateways: list[LiveGateway], workers: int, tester_id: str, secret: str
) -> set[int]:
    """The race, and everything that must hold after it; returns the workers that took part."""
    results = race(gateways, workers, secret)

    statuses = Counter(response.status_code for response in results)
    assert statuses == {200: REMAINING, 429: ATTEMPTS - REMAINING}, [
        (r.status_code, r.text[:200]) for r in results if r.status_code not in (200, 429)
    ]
    for response in results:
        if response.status_code == 429:
            error = response.json()["error"]
            assert (error["code"], error["param"]) == ("quota_exceeded", "generations_per_day")
            assert int(response.headers["Retry-After"]) >= 1
    admitted = {r.json()["id"] for r in results if r.status_code == 200}
    assert len(admitted) == REMAINING

    database_url = gateways[0].database_url
    total = ALREADY_USED + REMAINING
    assert ledger(database_url, tester_id) == {
        "generations_per_day": total,
        "video_seconds_per_day": total * SECONDS,
        "video_seconds_per_month": total * SECONDS,
        "concurrent_jobs": total,  # nobody polled: every job still holds its slot
    }
    billable = count(
        database_url,
        "SELECT SUM(generations) FROM usage_events WHERE tester_id = :tester",
        tester_id,
    )
    videos = count(database_url, "SELECT COUNT(*) FROM videos WHERE tester_id = :tester", tester_id)
    assert billable == videos == total
    owned = {
        row[0]
        for row in query(
            database_url, "SELECT id FROM videos WHERE tester_id = :tester", tester=tester_id
        )
    }
    assert admitted <= owned
    return {pid for gateway in gateways for pid in workers_of(gateway, workers)}


def pids_that_answered(gateways: list[LiveGateway]) -> set[int]:
    pids = set()
    for gateway in gateways:
        text = Path(gateway.log_path).read_text(errors="replace")
        for line in access_lines(text):
            if line.startswith("gunicorn-access") and '"POST /v1/videos"' in line:
                pids.add(int(line.split()[1].removeprefix("pid=").strip("<>")))
    return pids


def test_exact_quota_across_four_workers_on_sqlite(sqlite_fleet: list[LiveGateway]) -> None:
    tester_id, secret = prepare_tester(sqlite_fleet[0])
    workers = assert_exact(sqlite_fleet, SQLITE_WORKERS, tester_id, secret)
    # The race really ran on every process: each answered creates of its own.
    assert len(workers) == SQLITE_WORKERS
    assert workers <= pids_that_answered(sqlite_fleet)


def test_exact_quota_across_two_instances_on_postgresql(
    postgres_fleet: list[LiveGateway],
) -> None:
    tester_id, secret = prepare_tester(postgres_fleet[0])
    workers = assert_exact(postgres_fleet, POSTGRES_WORKERS, tester_id, secret)
    assert len(workers) == 2 * POSTGRES_WORKERS
    assert workers <= pids_that_answered(postgres_fleet)


def test_refunds_are_spendable_on_any_instance(
    postgres_fleet: list[LiveGateway], simulator: LiveSimulator
) -> None:
    """An upstream failure and a failed generation each give the generation back to the
    shared ledger, whichever instance sees the failure."""
    first, second = postgres_fleet
    key = first.new_tester_key()
    first.admin_ok("PUT", f"/testers/{key.tester_id}/policy", json={"generations_per_day": 1})
    headers = {"Authorization": f"Bearer {key.secret}"}
    with http_session() as session:

        def create(gateway: LiveGateway, prompt: str) -> requests.Response:
            return session.post(
                f"{gateway.api_url}/videos",
                json={"prompt": prompt},
                headers=headers,
                timeout=HTTP_TIMEOUT,
            )

        faults = f"{simulator.base}/_sim/faults"
        session.post(
            faults,
            json={"status": 503, "status_count": 1, "path_prefix": "/v1/videos"},
            timeout=HTTP_TIMEOUT,
        ).raise_for_status()
        try:
            refused_upstream = create(first, "the backend is down")
        finally:
            session.delete(faults, timeout=HTTP_TIMEOUT).raise_for_status()
        assert refused_upstream.status_code == 502, refused_upstream.text
        assert ledger(first.database_url, key.tester_id)["generations_per_day"] == 0

        doomed = create(second, "this one will [fail]")
        assert doomed.status_code == 200, doomed.text
        assert create(first, "no quota left").status_code == 429
        assert poll(session, first, doomed.json()["id"], headers) == "failed"
        assert ledger(first.database_url, key.tester_id)["generations_per_day"] == 0

        spent = create(second, "the refunded generation")
        assert spent.status_code == 200, spent.text
    assert ledger(first.database_url, key.tester_id)["generations_per_day"] == 1


def poll(
    session: requests.Session, gateway: LiveGateway, video_id: str, headers: dict[str, str]
) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = session.get(
            f"{gateway.api_url}/videos/{video_id}", headers=headers, timeout=HTTP_TIMEOUT
        )
        status = str(response.json()["status"])
        if status in ("completed", "failed"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{video_id} did not finish")
