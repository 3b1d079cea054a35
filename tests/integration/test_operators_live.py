"""What an operator meets at start, with real processes: a demo whose ports are taken, a
server on an unmigrated database, several workers without Redis, and ``/metrics`` under
plain ``gunicorn gateway.wsgi:app`` adding up every worker."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from gateway.observability.metrics import SIBLING_SPOOL_PREFIX
from keys.migrate import head_revision, upgrade
from tests.helpers import TEST_ROOT_SECRET, free_port
from tests.integration.live import (
    HTTP_TIMEOUT,
    ROOT,
    LiveProcess,
    clean_env,
    http_session,
    tail,
)

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "gateway", "demo"]
SERVE = [sys.executable, "-m", "gateway", "serve"]
GUNICORN = [sys.executable, "-m", "gunicorn", "gateway.wsgi:app", "-w", "2", "--no-control-socket"]
# Names the worker (pid) that answered each path.
ACCESS_LOG = ["--access-logfile", "-", "--access-logformat", 'access pid=%(p)s "%(m)s %(U)s"']


def gateway_env(database_url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        DRAWBRIDGE_DATABASE_URL=database_url,
        DRAWBRIDGE_ROOT_SECRET=TEST_ROOT_SECRET,
        DRAWBRIDGE_UPSTREAM_URL="http://127.0.0.1:9/v1",
        DRAWBRIDGE_UPSTREAM_API_KEY="sk-not-used-here",
        **extra,
    )


def sqlite_database(path: Path, revision: str = "head") -> str:
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    upgrade(engine, revision)
    engine.dispose()
    return url


def run_once(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command that must end by itself within a minute; its output as text."""
    return subprocess.run(
        argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# -- the demo --------------------------------------------------------------------------


@pytest.mark.parametrize("taken", ["--port", "--simulator-port"])
def test_a_demo_on_taken_ports_says_which_and_starts_nothing(
    tmp_path: Path, listener: int, taken: str
) -> None:
    ports = {"--port": str(free_port()), "--simulator-port": str(free_port()), taken: str(listener)}
    folder = tmp_path / "demo"

    result = run_once(
        [*DEMO, "--dir", str(folder), *(item for pair in ports.items() for item in pair)],
        clean_env(),
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {listener} is taken" in result.stderr
    assert f"pick another with {taken} N" in result.stderr
    assert "running" not in result.stdout + result.stderr
    assert not folder.exists()


# -- serve -----------------------------------------------------------------------------


def test_serve_refuses_an_unmigrated_database_in_one_line(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path / "old.db", "0003")

    result = run_once([*SERVE, "--bind", f"127.0.0.1:{free_port()}"], gateway_env(url))

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: the database at {url} is not migrated (at 0003, head is {head_revision()}): "
        "run `drawbridge db upgrade` (schema_not_current)"
    )


def test_plain_gunicorn_refuses_an_unmigrated_database_in_one_line(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path / "old.db", "0002")

    result = run_once([*GUNICORN, "-b", f"127.0.0.1:{free_port()}"], gateway_env(url))

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "is not migrated (at 0002" in output and "run `drawbridge db upgrade`" in output
    # No traceback of ours. (gunicorn itself may print one for its HaltServer when both
    # workers fail at once: a race in its arbiter, seen under load.)
    assert "SchemaNotCurrent" not in output and "keys/migrate.py" not in output
    assert "gateway/wsgi.py" not in output


def start_serve(tmp_path: Path, url: str, workers: str) -> LiveProcess:
    port = free_port()
    process = LiveProcess(
        "gateway",
        [*SERVE, "--bind", f"127.0.0.1:{port}", "--workers", workers, "--threads", "2"],
        gateway_env(url),
        tmp_path / f"serve-{workers}.log",
    )
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        process.stop()
        raise
    return process


def test_serve_warns_when_several_workers_count_without_redis(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path / "gateway.db")
    for workers, warned in (("2", True), ("1", False)):
        process = start_serve(tmp_path, url, workers)
        process.stop()
        log = process.log_text()
        assert ("warning: 2 workers and no redis_url" in log) is warned, log
        if warned:
            assert "Set redis_url (DRAWBRIDGE_REDIS_URL)" in log


# -- metrics under plain gunicorn ------------------------------------------------------


def test_metrics_add_up_every_worker_under_plain_gunicorn(tmp_path: Path) -> None:
    url = sqlite_database(tmp_path / "gateway.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = LiveProcess(
        "gateway",
        [*GUNICORN, "-b", f"127.0.0.1:{port}", *ACCESS_LOG],
        gateway_env(url),
        tmp_path / "gunicorn.log",
    )
    try:
        process.wait_ready(f"{base}/readyz")

        def probe(_: int) -> int:
            with http_session() as session:
                response = session.get(
                    f"{base}/healthz", headers={"Connection": "close"}, timeout=HTTP_TIMEOUT
                )
                return response.status_code

        # The kernel decides which worker accepts each connection, and on a busy machine one
        # of them can take a whole batch: send batches until both have answered (bounded).
        sent, answered = 0, set[str]()
        with ThreadPoolExecutor(8) as pool:
            while len(answered) < 2 and sent < 600:
                assert set(pool.map(probe, range(60))) == {200}
                sent += 60
                answered = set(re.findall(r'pid=<?(\d+)>? "GET /healthz"', process.log_text()))
        assert len(answered) == 2, "both workers should have answered:\n" + tail(process.log_path)
        time.sleep(1.5)  # each worker publishes its counts every second

        pattern = re.compile(
            r'^drawbridge_http_requests_total\{route="/healthz",method="GET",status="200"\} (\d+)$',
            re.MULTILINE,
        )
        totals = []
        for _ in range(8):  # fresh connections: either worker may answer each scrape
            with http_session() as session:
                scraped = session.get(
                    f"{base}/metrics", headers={"Connection": "close"}, timeout=HTTP_TIMEOUT
                )
            assert scraped.status_code == 200, scraped.text
            match = pattern.search(scraped.text)
            assert match is not None, scraped.text
            totals.append(int(match.group(1)))
        scrapers = set(re.findall(r'pid=<?(\d+)>? "GET /metrics"', process.log_text()))
    finally:
        process.stop()
        master = process.pid
        for spool in Path(tempfile.gettempdir()).glob(
            f"{SIBLING_SPOOL_PREFIX}{os.getuid()}-{master}-*"
        ):
            shutil.rmtree(spool, ignore_errors=True)
    # The readiness probes are not /healthz: every scrape sees exactly the probes sent.
    assert totals == [sent] * 8, (totals, scrapers)
