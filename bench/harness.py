"""Start and stop the real processes a benchmark measures, all on 127.0.0.1 free ports.

* the simulator: ``python -m gateway simulator`` (gunicorn, 1 worker, gthread, 16 threads);
* the bare passthrough and the gateway: ``python -m bench.serve`` (gunicorn through
  ``gateway.process.server.serve``, so both get the SAME settings: workers, gthread, threads,
  keep-alive, timeouts; default 1 worker x 8 threads); with ``servers`` naming more than
  gunicorn (e.g. ``("gunicorn", "granian")``), one more passthrough and one more gateway per
  further server, on the same database, named ``passthrough@granian`` and ``gateway@granian``;
* the gateway's database: a fresh SQLite file in a temporary directory, or a fresh database
  created on the PostgreSQL server of ``database_url`` (dropped at the end). It is migrated
  with ``keys.migrate.upgrade`` and holds one tester with one key, in a cohort whose policy
  puts the request rate limits out of reach (a load test measures work, not 429s); the video
  the benchmarks read is created through the gateway itself (``POST /v1/videos``, then
  polled until completed), so the ownership ledger holds it exactly as in production.

Everything stops by itself: ``Stack`` is a context manager, every started process is also
stopped at interpreter exit (``atexit``) and asked to die with its parent (``PR_SET_PDEATHSIG``),
readiness waits and requests have timeouts, and ``install_watchdog`` bounds a whole run.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.metadata
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import requests

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
DEFAULT_WORKERS = 1
DEFAULT_THREADS = 8
MIB = 1024 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
# In an extra gateway's process environment (Stack.extra_gateways): serve the gateway from
# the checkout at this path instead of this one (same database, so same schema).
CODE_VARIABLE = "BENCH_CODE"

BENCH_COHORT = "bench"
UNLIMITED_REQUESTS = {
    "requests_per_minute": 10**9,
    "requests_per_day": 10**9,
    # One key at thousands of requests a minute is what the anomaly rate rule suspends
    # (keys/leaks/anomalies.py): off for the load tests' cohort, its counters still run.
    "anomaly_rate_factor": 0,
}

_running: list[Service] = []


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark process dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers are children of its master)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


@dataclass
class Service:
    """One started server: a gunicorn master and its workers."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def worker_pid(self) -> int:
        """The worker process (the first, when there are several): gunicorn's and granian's
        workers are both children of their master."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            workers = children_of(self.process.pid)
            if workers:
                return workers[0]
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no worker under pid {self.process.pid}")

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop), then SIGKILL of its process group."""
        if self in _running:
            _running.remove(self)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # The group was created for this process (start_new_session), so it holds
                # only the master and its workers.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)


def _stop_all() -> None:
    for service in list(reversed(_running)):
        with contextlib.suppress(Exception):
            service.stop()


atexit.register(_stop_all)


def start_service(
    name: str,
    argv: Sequence[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log_dir: Path,
    ready_headers: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    """Start a server and wait until ``ready_path`` answers 200."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    service = Service(name, port, process, log_path, list(argv))
    _running.append(service)
    deadline = time.monotonic() + READY_TIMEOUT
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            if process.poll() is not None:
                service.stop()
                raise RuntimeError(f"{name} exited at start:\n{service.log_tail()}")
            try:
                answer = session.get(service.url + ready_path, headers=ready_headers, timeout=2)
                if answer.status_code == 200:
                    return service
            except requests.RequestException:
                pass
            time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT:.0f}s:\n{service.log_tail()}")


def setting_pairs(pairs: list[str]) -> dict[str, str]:
    """``--gateway-env`` values (``DRAWBRIDGE_NAME=VALUE``) as environment variables."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("DRAWBRIDGE_"):
            raise SystemExit(f"--gateway-env takes DRAWBRIDGE_NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without DRAWBRIDGE_*/BENCH_* variables, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DRAWBRIDGE_", "BENCH_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start_simulator(
    log_dir: Path, *, api_key: str, job_seconds: float, content_bytes: int
) -> Service:
    port = free_port()
    env = clean_env(
        DRAWBRIDGE_SIM_API_KEY=api_key,
        DRAWBRIDGE_SIM_JOB_SECONDS=str(job_seconds),
        DRAWBRIDGE_SIM_CONTENT_BYTES=str(content_bytes),
    )
    argv = [sys.executable, "-m", "gateway", "simulator", "--bind", f"{HOST}:{port}"]
    return start_service("simulator", argv, env, port, "/_sim/healthz", log_dir)


SERVERS = ("gunicorn", "granian")  # bench.serve --server


def served_name(app: str, server: str, first: bool) -> str:
    """A target's name: ``gateway`` on the run's first server, ``gateway@granian`` beyond."""
    return app if first else f"{app}@{server}"


def _serve_argv(
    app: str, port: int, workers: int, threads: int, server: str = "gunicorn"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.serve",
        app,
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--server",
        server,
    ]


def start_passthrough(
    log_dir: Path,
    *,
    upstream_url: str,
    api_key: str,
    workers: int,
    threads: int,
    extra_env: dict[str, str] | None = None,
    server: str = "gunicorn",
    name: str = "passthrough",
) -> Service:
    port = free_port()
    env = clean_env(
        BENCH_UPSTREAM_URL=upstream_url, BENCH_UPSTREAM_API_KEY=api_key, **(extra_env or {})
    )
    argv = _serve_argv("passthrough", port, workers, threads, server)
    return start_service(name, argv, env, port, "/healthz", log_dir)


def start_gateway(
    log_dir: Path,
    *,
    settings_env: dict[str, str],
    workers: int,
    threads: int,
    name: str = "gateway",
    server: str = "gunicorn",
) -> Service:
    port = free_port()
    argv = _serve_argv("gateway", port, workers, threads, server)
    env = clean_env(**settings_env)
    code = settings_env.get(CODE_VARIABLE)
    if code:
        # Another checkout's gateway (an A/B of two builds in one run): its directory is the
        # first entry of sys.path (``python -m`` puts the working directory there), ahead of
        # this checkout's editable install.
        env["PYTHONPATH"] = code
        return start_service(name, argv, env, port, "/readyz", log_dir, cwd=Path(code))
    return start_service(name, argv, env, port, "/readyz", log_dir)


NGINX_CONFIG = Path(__file__).resolve().parents[1] / "config" / "nginx.conf"


def nginx_binary() -> str | None:
    """nginx's path, if installed (Debian puts it in /usr/sbin, often not on PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


# bench.flood --floor: a location the front answers itself, the cheapest refusal there is.
FRONT_REFUSES_PATH = "/bench-front-refuses"
_FRONT_REFUSES = (
    f"location = {FRONT_REFUSES_PATH} {{\n"
    '            return 429 \'{"error":{"message":"refused by the front"}}\\n\';\n'
    "        }\n"
    "        location = /metrics {"
)


def start_front_proxy(
    gateway_port: int,
    *,
    workers: int = 1,
    config_path: Path | None = None,
    front_refuses: bool = False,
) -> Service:
    """nginx with config/nginx.conf (or ``config_path``, an experiment's variant of it) in
    front of the gateway, in a prefix of its own.

    Only the listening address, the gateway's address and the worker count change; with
    ``front_refuses``, nginx also answers ``FRONT_REFUSES_PATH`` with a 429 itself, without
    the gateway (bench.flood's floor)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
    prefix = Path(tempfile.mkdtemp(prefix="drawbridge-nginx-"))
    # nginx's workers run as an unprivileged user when started as root: they must reach
    # their temporary directories under the prefix.
    prefix.chmod(0o755)
    (prefix / "logs").mkdir()
    atexit.register(shutil.rmtree, prefix, ignore_errors=True)
    port = free_port()
    source = config_path or NGINX_CONFIG
    text = source.read_text()
    for old, new in (
        ("listen 127.0.0.1:8000;", f"listen {HOST}:{port};"),
        ("server 127.0.0.1:8080 ", f"server {HOST}:{gateway_port} "),
        ("worker_processes auto;", f"worker_processes {workers};"),
        *((("location = /metrics {", _FRONT_REFUSES),) if front_refuses else ()),
    ):
        if old not in text:
            raise RuntimeError(f"{source} no longer says {old!r}")
        text = text.replace(old, new)
    config = prefix / "nginx.conf"
    config.write_text(text)
    argv = [binary, "-p", f"{prefix}/", "-c", str(config), "-g", "daemon off;"]
    return start_service("nginx", argv, clean_env(), port, "/readyz", prefix)


# -- databases -------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``; dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    from keys.db import normalise_url

    url = make_url(normalise_url(server_url))
    name = "drawbridge_bench_" + secrets.token_hex(6)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def prepare_database(settings_env: dict[str, str]) -> tuple[str, str]:
    """Migrate the database and create one tester with one key: (tester id, key secret)."""
    from gateway.settings import load_settings, root_secret_of
    from gateway.state import build_store
    from keys.access.vault import Vault
    from keys.migrate import upgrade

    settings = load_settings(environ=settings_env)
    store = build_store(settings, Vault(root_secret_of(settings)))
    try:
        upgrade(store.database.engine)
        with store.transaction() as tx:
            # A load test must not measure the per-key rate limit's 429s: the tester's cohort
            # gets a policy with request limits out of reach (still counted, as in
            # production), where the code has cohort policies.
            policies = getattr(tx, "policies", None)
            if policies is not None:
                from keys.limits.policies import Policy

                policies.set_policy(BENCH_COHORT, Policy(**UNLIMITED_REQUESTS), "bench")
            tester = tx.testers.add(
                "Bench Tester",
                f"bench-{secrets.token_hex(4)}@example.com",
                "bench",
                cohort=BENCH_COHORT,
            )
            issued = tx.keys.issue(tester.id, "bench", metadata={"purpose": "benchmark"})
        return tester.id, issued.secret
    finally:
        store.database.dispose()


# -- the whole stack -------------------------------------------------------------------


@dataclass
class Target:
    """Something a benchmark sends ``GET /v1/videos/{id}`` to, and the id it knows it by."""

    name: str
    service: Service
    headers: dict[str, str]
    video_id: str

    @property
    def url(self) -> str:
        return self.service.url


@dataclass
class Stack:
    """Simulator + passthrough + gateway (+ database), started on enter, stopped on exit."""

    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS
    database_url: str | None = None
    content_bytes: int = 1_048_576
    job_seconds: float = 0.3
    with_passthrough: bool = True
    gateway_env: dict[str, str] = field(default_factory=dict)
    # Extra process environment for the gateway and the passthrough (e.g. BENCH_PROFILE),
    # and for the gateway alone (e.g. BENCH_PATCH).
    server_env: dict[str, str] = field(default_factory=dict)
    gateway_process_env: dict[str, str] = field(default_factory=dict)
    # More gateways on the same database, by name, each with extra process environment
    # (e.g. {"gateway+limiter-timer": {"BENCH_PATCH": "limiter-timer"}}, or
    # {"gateway-base": {CODE_VARIABLE: "/tmp/base"}} for another checkout's code): an A/B in
    # one run.
    extra_gateways: dict[str, dict[str, str]] = field(default_factory=dict)
    # The WSGI servers the gateway and the passthrough run under (bench.serve --server): the
    # first serves ``gateway`` and ``passthrough``, each further one its own pair, named by
    # ``served_name`` (an A/B of servers in one run, issue 22 goal 4).
    servers: tuple[str, ...] = ("gunicorn",)
    keep_dir: bool = False

    simulator: Service = field(init=False)
    passthrough: Service | None = field(init=False, default=None)
    gateway: Service = field(init=False)
    extras: dict[str, Service] = field(init=False, default_factory=dict)
    extra_passthroughs: dict[str, Service] = field(init=False, default_factory=dict)
    master_key: str = field(init=False)
    tester_key: str = field(init=False)
    video_id: str = field(init=False)  # as the gateway's tester knows it
    upstream_video_id: str = field(init=False)  # as the simulator knows it
    database: str = field(init=False)
    settings_env: dict[str, str] = field(init=False)
    directory: Path = field(init=False)
    _exit: contextlib.ExitStack = field(init=False)

    def __enter__(self) -> Stack:
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
        self.directory = Path(tempfile.mkdtemp(prefix="drawbridge-bench-"))
        if not self.keep_dir:
            self._exit.callback(shutil.rmtree, self.directory, ignore_errors=True)
        self.master_key = "sk-bench-master-" + secrets.token_urlsafe(24)
        self.simulator = start_simulator(
            self.directory,
            api_key=self.master_key,
            job_seconds=self.job_seconds,
            content_bytes=self.content_bytes,
        )
        self._exit.callback(self.simulator.stop)
        upstream_url = self.simulator.url + "/v1"
        if self.database_url:
            self.database = self._exit.enter_context(fresh_postgres_database(self.database_url))
        else:
            self.database = f"sqlite:///{self.directory / 'gateway.db'}"
        from keys.access.vault import new_root_secret

        self.settings_env = settings_env = {
            "DRAWBRIDGE_DATABASE_URL": self.database,
            "DRAWBRIDGE_ROOT_SECRET": new_root_secret(),
            "DRAWBRIDGE_UPSTREAM_URL": upstream_url,
            "DRAWBRIDGE_UPSTREAM_API_KEY": self.master_key,
            # The load tests drive one key from many connections: the bulkhead still counts
            # every request (its cost is measured) but refuses none.
            "DRAWBRIDGE_MAX_INFLIGHT_PER_KEY": "1000000",
            # The host's content cache of delivered videos, in the stack's own folder.
            "DRAWBRIDGE_PROVENANCE_CACHE_DIR": str(self.directory / "provenance-cache"),
            **self.gateway_env,
        }
        _, self.tester_key = prepare_database(settings_env)
        unknown = set(self.servers) - set(SERVERS)
        if not self.servers or unknown:
            raise ValueError(f"servers: {self.servers!r}; known: {SERVERS}")
        first, *others = self.servers
        self.gateway = start_gateway(
            self.directory,
            settings_env={**settings_env, **self.server_env, **self.gateway_process_env},
            workers=self.workers,
            threads=self.threads,
            server=first,
        )
        self._exit.callback(self.gateway.stop)
        for server in others:
            name = served_name("gateway", server, first=False)
            extra = start_gateway(
                self.directory,
                settings_env={**settings_env, **self.server_env, **self.gateway_process_env},
                workers=self.workers,
                threads=self.threads,
                name=name,
                server=server,
            )
            self._exit.callback(extra.stop)
            self.extras[name] = extra
        for name, process_env in self.extra_gateways.items():
            extra = start_gateway(
                self.directory,
                settings_env={**settings_env, **self.server_env, **process_env},
                workers=self.workers,
                threads=self.threads,
                name=name,
            )
            self._exit.callback(extra.stop)
            self.extras[name] = extra
        if self.with_passthrough:
            self.passthrough = start_passthrough(
                self.directory,
                upstream_url=upstream_url,
                api_key=self.master_key,
                workers=self.workers,
                threads=self.threads,
                extra_env=self.server_env,
                server=first,
            )
            self._exit.callback(self.passthrough.stop)
            for server in others:
                name = served_name("passthrough", server, first=False)
                passthrough = start_passthrough(
                    self.directory,
                    upstream_url=upstream_url,
                    api_key=self.master_key,
                    workers=self.workers,
                    threads=self.threads,
                    extra_env=self.server_env,
                    server=server,
                    name=name,
                )
                self._exit.callback(passthrough.stop)
                self.extra_passthroughs[name] = passthrough
        self.video_id = self._create_video()
        self.upstream_video_id = self._upstream_id()

    def _create_video(self) -> str:
        """A completed video owned by the tester, made through the gateway."""
        headers = {"Authorization": f"Bearer {self.tester_key}"}
        with requests.Session() as session:
            session.trust_env = False
            created = session.post(
                self.gateway.url + "/v1/videos",
                headers=headers,
                json={"prompt": "a benchmark clip", "model": "sora-2", "seconds": "4"},
                timeout=30,
            )
            self._check(created, "POST /v1/videos")
            video_id: str = created.json()["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                answer = session.get(
                    f"{self.gateway.url}/v1/videos/{video_id}", headers=headers, timeout=30
                )
                self._check(answer, f"GET /v1/videos/{video_id}")
                if answer.json()["status"] == "completed":
                    return video_id
                time.sleep(0.1)
        raise RuntimeError(f"video {video_id} did not complete")

    def _upstream_id(self) -> str:
        """The simulator's id of the one video (the gateway may present its own ids)."""
        answer = requests.get(
            self.simulator.url + "/v1/videos",
            headers={"Authorization": f"Bearer {self.master_key}"},
            timeout=30,
        )
        answer.raise_for_status()
        videos = answer.json()["data"]
        if len(videos) != 1:
            raise RuntimeError(f"expected one video upstream, found {len(videos)}")
        upstream_id: str = videos[0]["id"]
        return upstream_id

    def _check(self, answer: requests.Response, what: str) -> None:
        if answer.status_code != 200:
            raise RuntimeError(
                f"gateway: {what} answered {answer.status_code} {answer.text[:500]}\n"
                f"gateway log:\n{self.gateway.log_tail()}"
            )

    def targets(self) -> list[Target]:
        """(a) the simulator direct, (b) the bare passthrough, (c) the gateway."""
        master = {"Authorization": f"Bearer {self.master_key}"}
        tester = {"Authorization": f"Bearer {self.tester_key}"}
        found = [Target("simulator", self.simulator, master, self.upstream_video_id)]
        if self.passthrough is not None:
            found.append(Target("passthrough", self.passthrough, {}, self.upstream_video_id))
        found.append(Target("gateway", self.gateway, tester, self.video_id))
        for name, service in self.extra_passthroughs.items():
            found.append(Target(name, service, {}, self.upstream_video_id))
        for name, service in self.extras.items():
            found.append(Target(name, service, tester, self.video_id))
        return found

    def describe(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "threads": self.threads,
            # of the first server; granian has no worker class (its WSGI worker, threads
            # as granian's blocking threads)
            "worker_class": "gthread" if self.servers[0] == "gunicorn" else "granian-wsgi",
            "servers": list(self.servers),
            "database": self.database.split("://", 1)[0].split("+", 1)[0],
            "simulator": "python -m gateway simulator (gunicorn, 1 worker x 16 threads)",
            "gateway_argv": " ".join(self.gateway.argv[1:]),
            "passthrough_argv": " ".join(self.passthrough.argv[1:]) if self.passthrough else None,
        }


# -- run control and reporting ---------------------------------------------------------


def _raise_timeout(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("benchmark watchdog: the run took too long")


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_watchdog(seconds: int) -> None:
    """Bound the whole run: SIGALRM after ``seconds``; SIGTERM/SIGHUP unwind cleanly."""
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    signal.alarm(seconds)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        with contextlib.suppress(Exception):
            out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=5)
            wrk_version = (out.stdout + out.stderr).splitlines()[0].strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": [round(value, 2) for value in os.getloadavg()],
        "wrk": wrk_version,
        "code": code_facts(),
        "packages": {
            name: _version(name)
            for name in (
                "flask",
                "werkzeug",
                "gunicorn",
                "granian",
                "requests",
                "urllib3",
                "sqlalchemy",
            )
        },
    }


def code_facts() -> dict[str, Any]:
    """Which code was measured: the commit and the files changed on top of it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "changed_files": [name for name in changed if name.startswith(("gateway/", "keys/"))],
    }


def command_line() -> str:
    """The command as typed from the project root, e.g. ``.venv/bin/python -m bench.proxy``."""
    executable = Path(sys.executable)
    with contextlib.suppress(ValueError):
        executable = executable.relative_to(Path.cwd())
    return " ".join([str(executable), "-m", _main_module(), *sys.argv[1:]])


def _main_module() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def write_json(path: str, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def labelled_counts(metrics_text: str, metric: str) -> dict[str, int]:
    """A counter with one label, from a Prometheus text page: {label value: count}."""
    found = {}
    for line in metrics_text.splitlines():
        if line.startswith(metric + "{"):
            label, value = line.rsplit(" ", 1)
            found[label.split('"')[1]] = int(float(value))
    return found
