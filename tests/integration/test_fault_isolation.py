"""One tester's trouble stays theirs (docs/isolation.md), on real processes.

* Tester A's upstream hangs and A keeps downloading: the bulkhead refuses A's requests beyond
  ``max_inflight_per_key`` per worker with 429, and tester B's requests are answered at once,
  although A's hung ones hold their threads until the upstream read timeout.
* A client that stops reading a download: at ``upstream_download_deadline`` the gateway cuts
  it, and the thread and the key's place are free again.
* Slow clients (headers a line at a time, more connections than the gateway has threads)
  against the front proxy of config/nginx.conf: B is answered at once all the same.

Each test runs its own simulator, whose faults are then everybody's but only this test's.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.harness import nginx_binary, start_front_proxy
from tests.helpers import free_port, service_unavailable
from tests.integration.fleet import gateway_fleet
from tests.integration.live import (
    LiveGateway,
    LiveSimulator,
    TesterKey,
    error_of,
    http_session,
    start_simulator,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

CAP = 2  # per worker; the gateway runs 2 workers x 4 threads
UPSTREAM_READ_TIMEOUT = 20  # how long a hung upstream call holds its thread
# B's requests must be answered well before a hung call would free a thread.
GOOD_TESTER_BOUND = 5.0
DOWNLOADS = 16


@pytest.fixture
def private_simulator(tmp_path: Path) -> Iterator[LiveSimulator]:
    simulator = start_simulator(free_port(), "sim-master-fault", tmp_path / "sim.log", 200_000)
    yield simulator
    simulator.process.stop()


@contextlib.contextmanager
def private_gateway(
    simulator: LiveSimulator, tmp_path: Path, workers: int = 2, **settings: str
) -> Iterator[LiveGateway]:
    with gateway_fleet(
        simulator,
        tmp_path,
        f"sqlite:///{tmp_path / 'drawbridge.db'}",
        instances=1,
        workers=workers,
        DRAWBRIDGE_UPSTREAM_READ_TIMEOUT=str(UPSTREAM_READ_TIMEOUT),
        DRAWBRIDGE_TRUSTED_PROXIES="1",
        **settings,
    ) as (gateway,):
        yield gateway


@pytest.fixture
def gateway(private_simulator: LiveSimulator, tmp_path: Path) -> Iterator[LiveGateway]:
    with private_gateway(
        private_simulator, tmp_path, DRAWBRIDGE_MAX_INFLIGHT_PER_KEY=str(CAP)
    ) as gateway:
        yield gateway


def completed_video(gateway: LiveGateway, key: TesterKey, base: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key.secret}"}
    base = base or gateway.base
    with http_session() as session:
        created = session.post(
            f"{base}/v1/videos", json={"prompt": "a clip"}, headers=headers, timeout=15
        )
        assert created.status_code == 200, created.text
        video_id: str = created.json()["id"]
        for _ in range(200):
            answer = session.get(f"{base}/v1/videos/{video_id}", headers=headers, timeout=15)
            if answer.json()["status"] == "completed":
                return video_id
            time.sleep(0.05)
    raise AssertionError(f"{video_id} did not complete")


def upstream_ids(simulator: LiveSimulator) -> set[str]:
    answer = requests.get(
        f"{simulator.api_url}/videos?limit=100",
        headers={"Authorization": f"Bearer {simulator.master}"},
        timeout=15,
    )
    return {video["id"] for video in answer.json()["data"]}


def hang(simulator: LiveSimulator, upstream_id: str | None) -> None:
    """Hang every upstream request about ``upstream_id``; None clears the fault."""
    url = f"{simulator.base}/_sim/faults"
    if upstream_id is None:
        requests.delete(url, timeout=15).raise_for_status()
    else:
        faults = {"hang": True, "path_prefix": f"/v1/videos/{upstream_id}"}
        requests.post(url, json=faults, timeout=15).raise_for_status()


def good_tester_requests(base: str, key: TesterKey, video_id: str, rounds: int) -> list[float]:
    """B's GET /v1/me and GET /v1/videos/{id}, each answered 200 within the bound."""
    durations = []
    headers = {"Authorization": f"Bearer {key.secret}"}
    with http_session() as session:
        for _ in range(rounds):
            for path in ("/v1/me", f"/v1/videos/{video_id}"):
                started = time.monotonic()
                answer = session.get(base + path, headers=headers, timeout=GOOD_TESTER_BOUND)
                durations.append(time.monotonic() - started)
                assert answer.status_code == 200, (path, answer.text)
    return durations


def test_a_hung_upstream_holds_only_its_testers_share_of_threads(
    gateway: LiveGateway, private_simulator: LiveSimulator
) -> None:
    tester_a, tester_b = gateway.new_tester_key(), gateway.new_tester_key()
    before = upstream_ids(private_simulator)
    video_a = completed_video(gateway, tester_a)
    (upstream_a,) = upstream_ids(private_simulator) - before
    video_b = completed_video(gateway, tester_b)

    hang(private_simulator, upstream_a)
    outcomes: Counter[str] = Counter()
    refusals: list[requests.Response] = []
    lock = threading.Lock()

    def download() -> None:
        with http_session() as session:
            try:
                answer = session.get(
                    f"{gateway.api_url}/videos/{video_a}/content",
                    headers={"Authorization": f"Bearer {tester_a.secret}"},
                    timeout=UPSTREAM_READ_TIMEOUT + 15,
                )
                outcome = str(answer.status_code)
                if answer.status_code == 429:
                    refusals.append(answer)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
        with lock:
            outcomes[outcome] += 1

    # A opens twice as many downloads as the gateway has threads: without the bulkhead,
    # every thread would wait on the hung upstream, and B with them.
    downloads = [threading.Thread(target=download) for _ in range(DOWNLOADS)]
    try:
        for thread in downloads:
            thread.start()
        time.sleep(1.0)  # A's downloads are in: hung, or refused
        durations = good_tester_requests(gateway.base, tester_b, video_b, rounds=5)
        assert max(durations) < GOOD_TESTER_BOUND
        # A's refusals came at once, in the error shape, telling the SDK to retry.
        assert len(refusals) >= DOWNLOADS - 2 * CAP, outcomes
        for refused in refusals:
            assert error_of(refused)["code"] == "too_many_concurrent_requests"
            assert refused.headers["x-should-retry"] == "true"
            assert refused.headers["Retry-After"] == "1"
    finally:
        hang(private_simulator, None)
        for thread in downloads:
            thread.join(timeout=UPSTREAM_READ_TIMEOUT + 20)
    # Released by the cleared fault: every admitted download finished, nothing was stuck.
    assert sum(outcomes.values()) == DOWNLOADS, outcomes
    assert set(outcomes) <= {"200", "429"}, outcomes
    # ...and every place was given back: A is served again.
    answer = gateway.tester_get("/me", tester_a.secret)
    assert answer.status_code == 200, answer.text


def test_a_download_the_client_stops_reading_is_cut_at_its_deadline(tmp_path: Path) -> None:
    content_bytes = 64 * 1024 * 1024  # far more than the socket buffers between us
    simulator = start_simulator(
        free_port(), "sim-master-fault", tmp_path / "sim.log", content_bytes
    )
    try:
        with private_gateway(
            simulator,
            tmp_path,
            workers=1,  # the cap is per worker: one worker makes "the key's place" one place
            DRAWBRIDGE_MAX_INFLIGHT_PER_KEY="1",
            DRAWBRIDGE_UPSTREAM_DOWNLOAD_DEADLINE="2",
        ) as gateway:
            key = gateway.new_tester_key()
            video = completed_video(gateway, key)
            port = int(gateway.base.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=15) as stalled:
                stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                stalled.sendall(
                    f"GET /v1/videos/{video}/content HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {key.secret}\r\n\r\n".encode()
                )
                assert stalled.recv(4096).startswith(b"HTTP/1.1 200")
                # The download holds the key's one place while it runs...
                held = gateway.tester_get("/me", key.secret)
                assert held.status_code == 429, held.text
                assert error_of(held)["code"] == "too_many_concurrent_requests"
                # ...and the deadline gives it back although the client never read on.
                time.sleep(3.5)
                freed = gateway.tester_get("/me", key.secret)
                assert freed.status_code == 200, freed.text
                received = 4096
                with contextlib.suppress(OSError):
                    while chunk := stalled.recv(1024 * 1024):
                        received += len(chunk)
                assert received < content_bytes
            assert "content download cut" in gateway.log_path.read_text()
    finally:
        simulator.process.stop()


def slowloris(port: int, stop: threading.Event, opened: list[socket.socket]) -> None:
    """Send a request's headers a line every 0.5 s, from another loopback address."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
    ) as sock:
        opened.append(sock)
        sock.sendall(b"GET /v1/me HTTP/1.1\r\nHost: drawbridge\r\n")
        while not stop.wait(0.5):
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                return


def test_slow_clients_wait_in_the_front_proxy_not_in_gateway_threads(
    gateway: LiveGateway,
) -> None:
    if nginx_binary() is None:
        service_unavailable("nginx", "not installed; `make system-packages` installs it")
    port = int(gateway.base.rsplit(":", 1)[1])
    proxy = start_front_proxy(port)
    stop, opened = threading.Event(), []
    slow = [
        threading.Thread(target=slowloris, args=(proxy.port, stop, opened), daemon=True)
        for _ in range(24)  # three times the gateway's 8 threads
    ]
    try:
        front = proxy.url
        tester = gateway.new_tester_key()
        video = completed_video(gateway, tester, base=front)
        for thread in slow:
            thread.start()
        time.sleep(1.5)
        assert len(opened) == len(slow)
        durations = good_tester_requests(front, tester, video, rounds=5)
        assert max(durations) < GOOD_TESTER_BOUND
        # nginx's own refusals come in the gateway's error shape too.
        with http_session() as session:
            too_long = session.get(f"{front}/v1/me?q={'x' * 9000}", timeout=15)
        assert too_long.status_code == 414
        assert error_of(too_long)["code"] == "url_too_long"
        assert too_long.headers["x-should-retry"] == "false"
    finally:
        stop.set()
        for thread in slow:
            thread.join(timeout=10)
        proxy.stop()
