"""Real processes for the integration tests: the simulator and the gateway under gunicorn,
the ``drawbridge`` CLI run as a subprocess, and clients that talk to them over TCP.

Nothing here imports the gateway's app: the tests see the product the way a deployment does.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import requests

from tests.helpers import TEST_ROOT_SECRET

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 60.0
# Every request the tests make carries a timeout, so a hung process fails a test, not the run.
HTTP_TIMEOUT = 15.0

# A gunicorn access log without query strings or headers: it names the worker (pid) that
# answered each path, so tests can show that every worker enforces a revocation.
GUNICORN_TEST_CONFIG = """\
accesslog = "-"
access_log_format = 'gunicorn-access pid=%(p)s "%(m)s %(U)s" %(s)s'
"""


def access_record(line: str) -> str | None:
    """The message of a gunicorn access log line (a JSON line, like every line the gateway
    and gunicorn write: gateway/process/server.py GunicornLogger), or None for any other line."""
    if '"gunicorn.access"' not in line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return str(record["message"]) if record.get("logger") == "gunicorn.access" else None


def access_lines(log_text: str) -> list[str]:
    """The messages of the gunicorn access log lines in a log."""
    return [m for line in log_text.splitlines() if (m := access_record(line)) is not None]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: no DRAWBRIDGE_* settings leak in from the shell."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DRAWBRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def http_session() -> requests.Session:
    """A requests session that ignores proxy variables and netrc (we talk to 127.0.0.1)."""
    session = requests.Session()
    session.trust_env = False
    return session


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def sleep_until(moment: float) -> None:
    """Sleep until the wall clock (``time.time()``) reaches ``moment``."""
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.1))


class LiveProcess:
    """A child process in its own session, its output appended to a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``url`` answers 200; fail with the log's tail if the process dies."""
        session = http_session()
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self.popen.poll()
                if code is not None:
                    raise RuntimeError(
                        f"the {self.name} exited with status {code} at start:\n"
                        f"{tail(self.log_path)}"
                    )
                with contextlib.suppress(requests.RequestException):
                    # "Connection: close": a probe connection left open after failed
                    # attempts would hold gunicorn's graceful stop for its linger time.
                    probe = session.get(url, timeout=1, headers={"Connection": "close"})
                    if probe.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the {self.name} was not ready at {url} after {timeout}s:\n"
                        f"{tail(self.log_path)}"
                    )
                time.sleep(0.05)
        finally:
            session.close()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for whatever of its process group is still there."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT)
        # The group is the session we started: a worker that outlived its master ends here too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


# -- the simulator ---------------------------------------------------------------------


@dataclass
class LiveSimulator:
    base: str  # http://127.0.0.1:<port>
    master: str
    content_bytes: int
    process: LiveProcess

    @property
    def api_url(self) -> str:
        return f"{self.base}/v1"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def recorded_requests(self) -> list[dict[str, Any]]:
        with http_session() as session:
            response = session.get(f"{self.base}/_sim/requests", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return entries

    def clear_requests(self) -> None:
        with http_session() as session:
            session.delete(f"{self.base}/_sim/requests", timeout=HTTP_TIMEOUT).raise_for_status()


def start_simulator(port: int, master: str, log_path: Path, content_bytes: int) -> LiveSimulator:
    env = clean_env(
        DRAWBRIDGE_SIM_API_KEY=master,
        DRAWBRIDGE_SIM_JOB_SECONDS="0.6",
        DRAWBRIDGE_SIM_CONTENT_BYTES=str(content_bytes),
        DRAWBRIDGE_SIM_POLL_AFTER_MS="100",
    )
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "gateway.simulator:app_from_env()",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "--threads",
        "8",
        "--no-control-socket",
        # The request line (with its query string) lands in the log the leak test reads.
        "--access-logfile",
        "-",
    ]
    process = LiveProcess("simulator", argv, env, log_path)
    simulator = LiveSimulator(f"http://127.0.0.1:{port}", master, content_bytes, process)
    try:
        process.wait_ready(f"{simulator.base}/_sim/healthz")
    except BaseException:
        process.stop()
        raise
    return simulator


# -- the gateway -----------------------------------------------------------------------


@dataclass(frozen=True)
class TesterKey:
    """A fresh tester and one key of theirs, as handed over to the tester."""

    tester_id: str
    key_id: str
    secret: str
    hint: str


@dataclass
class LiveGateway:
    backend: str
    base: str  # http://127.0.0.1:<port>
    database_url: str
    sqlite_path: Path | None
    env: dict[str, str]
    log_path: Path
    admin_token: str = ""
    admin_token_id: str = ""
    process: LiveProcess | None = None
    # Every raw secret the fixtures handed out, for the leak checks.
    issued_secrets: list[str] = field(default_factory=list)
    # SDK clients of the current test; closed after it, so no kept-alive connection
    # outlives the test (gunicorn waits for those when it stops).
    clients: list[openai.OpenAI] = field(default_factory=list)

    @classmethod
    def before(
        cls,
        simulator: LiveSimulator,
        database_url: str,
        port: int,
        log_path: Path,
        **settings: str,
    ) -> LiveGateway:
        """A gateway (not started yet) on ``database_url``, listening on ``port``, in front
        of ``simulator``; ``settings`` are more ``DRAWBRIDGE_*`` variables."""
        sqlite = database_url.startswith("sqlite:///")
        # The host's content cache of delivered videos: this gateway's own folder.
        settings.setdefault(
            "DRAWBRIDGE_PROVENANCE_CACHE_DIR", str(log_path.parent / "provenance-cache")
        )
        return cls(
            backend="sqlite" if sqlite else "postgresql",
            base=f"http://127.0.0.1:{port}",
            database_url=database_url,
            sqlite_path=Path(database_url.removeprefix("sqlite:///")) if sqlite else None,
            env=clean_env(
                DRAWBRIDGE_DATABASE_URL=database_url,
                DRAWBRIDGE_ROOT_SECRET=TEST_ROOT_SECRET,
                DRAWBRIDGE_UPSTREAM_URL=simulator.api_url,
                DRAWBRIDGE_UPSTREAM_API_KEY=simulator.master,
                **settings,
            ),
            log_path=log_path,
        )

    @property
    def api_url(self) -> str:
        return f"{self.base}/v1"

    # -- the CLI, as an operator runs it ---------------------------------------------

    def cli(self, *args: str) -> Any:
        """Run ``python -m gateway ARGS`` against this gateway's database; JSON is parsed."""
        result = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"drawbridge {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
        return json.loads(result.stdout) if "--json" in args else result.stdout

    # -- the admin API -----------------------------------------------------------------

    def admin(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """One admin API call (``path`` below /admin/v1) with an admin token."""
        headers = {
            **kwargs.pop("headers", {}),
            "Authorization": f"Bearer {token or self.admin_token}",
        }
        with http_session() as session:
            return session.request(
                method,
                f"{self.base}/admin/v1{path}",
                headers=headers,
                timeout=HTTP_TIMEOUT,
                **kwargs,
            )

    def admin_ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.admin(method, path, **kwargs)
        failure = f"{method} {path}: {response.status_code} {response.text}"
        assert response.status_code < 300, failure
        body: dict[str, Any] = response.json()
        return body

    def new_tester(self, via: str = "api") -> str:
        """A fresh tester's id, added through the admin API or the CLI."""
        suffix = secrets.token_hex(6)
        name, email = f"Tester {suffix}", f"tester-{suffix}@example.com"
        if via == "cli":
            tester = self.cli("testers", "add", name, "--email", email, "--json")
        else:
            tester = self.admin_ok("POST", "/testers", json={"name": name, "email": email})
        assert tester["status"] == "active"
        tester_id: str = tester["id"]
        return tester_id

    def issue_key(self, tester_id: str, via: str = "api", **payload: Any) -> TesterKey:
        """Issue a key through the admin API (``payload`` is its JSON) or the CLI."""
        if via == "cli":
            assert not payload, "the CLI path takes no options here"
            issued = self.cli("keys", "issue", tester_id, "--json")
        else:
            issued = self.admin_ok("POST", f"/testers/{tester_id}/keys", json=payload)
        self.issued_secrets.append(issued["secret"])
        return TesterKey(tester_id, issued["id"], issued["secret"], issued["hint"])

    def new_tester_key(self, via: str = "api", **payload: Any) -> TesterKey:
        return self.issue_key(self.new_tester(via), via, **payload)

    # -- testers' clients --------------------------------------------------------------

    def openai_client(self, secret: str, **options: Any) -> openai.OpenAI:
        """The official SDK, unmodified, pointed at the gateway with a tester key."""
        http_client = openai.DefaultHttpxClient(
            trust_env=False, event_hooks=options.pop("event_hooks", None)
        )
        client = openai.OpenAI(
            base_url=self.api_url,
            api_key=secret,
            max_retries=0,
            timeout=HTTP_TIMEOUT,
            http_client=http_client,
            **options,
        )
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    def tester_post(self, path: str, secret: str, **kwargs: Any) -> requests.Response:
        """A plain HTTP POST on the tester API (``path`` below /v1)."""
        with http_session() as session:
            return session.post(
                f"{self.api_url}{path}",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=HTTP_TIMEOUT,
                **kwargs,
            )

    def tester_get(self, path: str, secret: str, **kwargs: Any) -> requests.Response:
        """A plain HTTP GET on the tester API (``path`` below /v1)."""
        with http_session() as session:
            return session.get(
                f"{self.api_url}{path}",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=HTTP_TIMEOUT,
                **kwargs,
            )


def start_gateway(
    gateway: LiveGateway, port: int, tmp: Path, *, workers: int = 2, threads: int = 4
) -> LiveProcess:
    """Start ``python -m gateway serve`` under gunicorn; returns its process once ready."""
    config = tmp / "gunicorn_test.conf.py"
    config.write_text(GUNICORN_TEST_CONFIG)
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--gunicorn-config",
        str(config),
    ]
    process = LiveProcess("gateway", argv, gateway.env, gateway.log_path)
    try:
        process.wait_ready(f"{gateway.base}/readyz")
    except BaseException:
        process.stop()
        raise
    return process


def error_of(response: requests.Response) -> dict[str, Any]:
    """The ``error`` object of an error response (the OpenAI shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def sdk_error_code(exc: openai.APIStatusError) -> str | None:
    """The ``code`` of an SDK error, checked against the raw body too."""
    body = exc.response.json()
    assert body["error"]["code"] == exc.code, (body, exc.code)
    return exc.code


def child_pids(pid: int) -> set[int]:
    """The live children of a process (from /proc; zombies do not count)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name is in parentheses and may hold spaces: split after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            state, parent = fields[0], int(fields[1])
            if parent == pid and state != "Z":
                children.add(int(stat.parent.name))
    return children


def connections_to(pid: int, port: int) -> int:
    """How many established TCP connections a process holds to ``port`` on this machine (from
    /proc: its socket descriptors matched against the kernel's TCP tables)."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            target = os.readlink(descriptor)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    count += 1
    return count


def is_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
