"""``drawbridge doctor``: check a deployment and say, for each finding, how to fix it.

The checks read what a deployment is made of (settings, the database, Redis, the root
secret file, the backend, how requests arrive) and never change it: the backend is asked
for a list of videos, which spends no generation. Each returns a ``Finding``; ``ok`` and
``warn`` leave the exit status 0, one ``fail`` makes it 1 (``exit_status``).

The same checks run in the CLI on the server (``drawbridge doctor``) and behind
``GET /admin/v1/doctor`` (``drawbridge --server URL doctor``), where the doctor's own request
shows how requests reach the gateway (``Arrival``). No Flask here (tests/test_layering.py).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from keys.db import normalise_url
from keys.errors import DatabaseUnreachable, SchemaNotCurrent
from keys.migrate import display_url, head_revision, require_current_schema
from keys.models import AuditCheckpoint, AuditEntry

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.upstream.client import UpstreamClient
    from keys.store import Store

OK, WARN, FAIL = "ok", "warn", "fail"
# Clock skew against the database: tokens, expiries, leases and audit times are compared
# across hosts. Beyond a second is worth knowing; beyond 30 s leases and expiries misfire.
SKEW_WARN_SECONDS = 1.0
SKEW_FAIL_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 5.0
# `drawbridge serve` tells its workers how many they are (gateway/process/server.py).
WORKERS_VARIABLE = "DRAWBRIDGE_GUNICORN_WORKERS"


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``status`` is ok, warn or fail; ``fix`` says what to do."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Arrival:
    """How one request reached the gateway: the peer that connected (before any
    X-Forwarded-For is trusted) and the X-Forwarded-For header it carried, if any."""

    peer: str
    forwarded_for: str | None


def workers_from_environment() -> int | None:
    """The worker count `drawbridge serve` started (None under plain gunicorn)."""
    value = os.environ.get(WORKERS_VARIABLE, "")
    return int(value) if value.isdigit() else None


def exit_status(findings: list[Finding]) -> int:
    """0 when nothing failed (warnings included), 1 on any failure."""
    return 1 if any(finding.status == FAIL for finding in findings) else 0


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return address.strip().lower() == "localhost"


def bind_host(bind: str) -> str:
    """The host part of a gunicorn bind (``127.0.0.1:8080``, ``[::1]:8080``, ``unix:...``)."""
    if bind.startswith("unix:"):
        return "unix"
    host, _, _port = bind.rpartition(":")
    return host or bind


# -- the database --------------------------------------------------------------------------


def check_database(url: str) -> Finding:
    """Reachable, and migrated to the code's head revision."""
    shown = display_url(url)
    try:
        require_current_schema(url)
    except SchemaNotCurrent as exc:
        return Finding("database", FAIL, exc.message, "run `drawbridge db upgrade`")
    except DatabaseUnreachable as exc:
        return Finding(
            "database",
            FAIL,
            exc.message,
            "check database.url (DRAWBRIDGE_DATABASE_URL), that the server runs and that "
            "this host may connect (pg_hba.conf)",
        )
    return Finding("database", OK, f"{shown} answers and is at {head_revision()} (head)")


def check_clock(url: str, now: Callable[[], datetime] | None = None) -> Finding:
    """This host's clock against PostgreSQL's ``now()``: expiries, leases and audit times
    written by several hosts must agree."""
    now = now or (lambda: datetime.now(UTC))
    engine = create_engine(normalise_url(url), poolclass=NullPool)
    try:
        if engine.dialect.name != "postgresql":
            return Finding(
                "clock", OK, f"{engine.dialect.name}: the database runs on this host's clock"
            )
        with engine.connect() as connection:
            before = now()
            database_now = connection.execute(text("SELECT now()")).scalar_one()
            after = now()
    except SQLAlchemyError as exc:
        return Finding("clock", WARN, f"not checked: the database did not answer ({exc.code})")
    finally:
        engine.dispose()
    here = before + (after - before) / 2
    skew = (here - database_now).total_seconds()
    detail = f"this host is {abs(skew):.3f} s {'ahead of' if skew > 0 else 'behind'} PostgreSQL"
    fix = "run an NTP client (systemd-timesyncd or chrony) on this host and the database's"
    if abs(skew) >= SKEW_FAIL_SECONDS:
        return Finding("clock", FAIL, detail, fix)
    if abs(skew) >= SKEW_WARN_SECONDS:
        return Finding("clock", WARN, detail, fix)
    return Finding("clock", OK, detail)


# -- Redis ----------------------------------------------------------------------------------


def check_redis(settings: Settings, workers: int | None) -> Finding:
    """Redis answers when it is configured; it is needed once more than one process counts."""
    processes = (workers or 1) * settings.instances
    counted = (
        f"{workers} worker{'s' if workers != 1 else ''}"
        if workers is not None
        else "an unknown number of workers"
    ) + f" on {settings.instances} instance{'s' if settings.instances != 1 else ''}"
    if not settings.redis_url:
        if processes > 1 or workers is None:
            return Finding(
                "redis",
                WARN,
                f"no redis_url with {counted}: rate limits and anomaly counters are kept in "
                "each worker process, so each allows a key its full rate",
                "set redis_url (DRAWBRIDGE_REDIS_URL) to a Redis every instance reaches",
            )
        return Finding("redis", OK, f"not configured, not needed with {counted}")
    import redis

    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=PROBE_TIMEOUT_SECONDS, socket_connect_timeout=2
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return Finding(
            "redis",
            FAIL,
            f"redis_url does not answer ({type(exc).__name__}); with {counted} the limits "
            "fall back to each process's memory",
            "start Redis, or fix redis_url (DRAWBRIDGE_REDIS_URL)",
        )
    finally:
        client.close()
    return Finding("redis", OK, f"answers, shared by {counted}")


# -- the root secret ------------------------------------------------------------------------


def check_root_secret(settings: Settings, uid: int | None = None) -> Finding:
    """The root secret is set, and its file is the gateway user's alone (0600)."""
    from gateway.settings import SettingsError, root_secret_of
    from keys.access.vault import Vault, VaultError

    uid = os.geteuid() if uid is None else uid
    if settings.root_secret:
        source = "DRAWBRIDGE_ROOT_SECRET (the environment)"
    elif settings.root_secret_file:
        path = Path(settings.root_secret_file)
        source = str(path)
        try:
            info = path.stat()
        except OSError as exc:
            return Finding(
                "root_secret",
                FAIL,
                f"{path}: {exc.strerror}",
                f"restore it from the backup, or point root_secret_file at it; "
                f"a new one (`drawbridge secrets new-root > {path}`) invalidates every key",
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            return Finding(
                "root_secret",
                FAIL,
                f"{path} has mode {mode:04o}: other users may read it",
                f"chmod 600 {path}",
            )
        if info.st_uid != uid:
            return Finding(
                "root_secret",
                FAIL,
                f"{path} is owned by uid {info.st_uid}, the gateway runs as uid {uid}",
                f"chown the file to the gateway's user (e.g. chown drawbridge: {path})",
            )
    else:
        return Finding(
            "root_secret",
            FAIL,
            "no root secret configured",
            "set root_secret_file to a 0600 file made with `drawbridge secrets new-root`",
        )
    try:
        Vault(root_secret_of(settings))
    except (SettingsError, VaultError) as exc:
        return Finding(
            "root_secret", FAIL, f"{source}: {exc}", "restore the root secret from the backup"
        )
    if settings.root_secret:
        return Finding(
            "root_secret",
            OK,
            f"from {source}; a 0600 file keeps it out of process listings",
        )
    return Finding("root_secret", OK, f"{source}: mode 0600, owned by uid {uid}")


# -- the backend ----------------------------------------------------------------------------


def check_upstream(upstream: UpstreamClient | None, problem: str | None = None) -> Finding:
    """The backend accepts the master credential: a list of videos, no generation spent."""
    from gateway.upstream.client import UpstreamError

    if upstream is None:
        return Finding(
            "upstream",
            FAIL,
            problem or "no upstream credential",
            "set DRAWBRIDGE_UPSTREAM_API_KEY or upstream.api_key_encrypted "
            "(`drawbridge secrets encrypt`)",
        )
    try:
        upstream.call_json(
            "GET", "videos", params={"limit": "1"}, request_id="req_drawbridge_doctor"
        )
    except UpstreamError as exc:
        if upstream.auth.describe().startswith("failing"):
            return Finding(
                "upstream",
                FAIL,
                f"{upstream.base_url} refuses the gateway's credential "
                f"({upstream.auth.describe()})",
                "check DRAWBRIDGE_UPSTREAM_API_KEY / upstream.api_key_encrypted",
            )
        return Finding(
            "upstream",
            FAIL,
            f"{upstream.base_url}: {exc.message} ({exc.code})",
            "check upstream.url and that this host reaches the backend",
        )
    return Finding(
        "upstream", OK, f"{upstream.base_url} accepts the credential (GET videos, no generation)"
    )


# -- proxies and /metrics -------------------------------------------------------------------


def check_trusted_proxies(settings: Settings, bind: str, arrival: Arrival | None) -> Finding:
    """``trusted_proxies`` matches what is in front: with a proxy, every request arrives from
    its address with X-Forwarded-For; without one, nothing may set that header."""
    trusted = settings.trusted_proxies
    if arrival is not None:
        proxied = arrival.forwarded_for is not None
        if trusted == 0 and proxied:
            return Finding(
                "trusted_proxies",
                FAIL,
                f"this request came from {arrival.peer} with X-Forwarded-For, but "
                "trusted_proxies = 0: every client looks like the proxy to per-address "
                "limits, anomaly detection, usage records and /metrics",
                "set trusted_proxies = 1 (one nginx in front)",
            )
        if trusted and not proxied:
            if _loopback(arrival.peer):
                return Finding(
                    "trusted_proxies",
                    WARN,
                    f"trusted_proxies = {trusted}, but this request reached the gateway "
                    f"directly from {arrival.peer}: the proxy was not seen",
                    "run `drawbridge --server PUBLIC_URL doctor`, through the proxy",
                )
            return Finding(
                "trusted_proxies",
                FAIL,
                f"trusted_proxies = {trusted}, but {arrival.peer} reached the gateway without "
                "a proxy: such a client can forge X-Forwarded-For and pick its address",
                "bind the gateway to 127.0.0.1 (only the proxy may reach it)",
            )
        if trusted and proxied:
            hops = len([hop for hop in (arrival.forwarded_for or "").split(",") if hop.strip()])
            if hops < trusted:
                return Finding(
                    "trusted_proxies",
                    FAIL,
                    f"trusted_proxies = {trusted}, but X-Forwarded-For names only {hops} "
                    "address: the gateway trusts an address a client wrote",
                    f"set trusted_proxies = {hops}",
                )
            return Finding(
                "trusted_proxies",
                OK,
                f"{trusted} proxy in front (from {arrival.peer}, with X-Forwarded-For)",
            )
    host = bind_host(bind)
    if trusted and host != "unix" and not _loopback(host):
        return Finding(
            "trusted_proxies",
            FAIL,
            f"trusted_proxies = {trusted} with the gateway bound to {bind}: a client that "
            "reaches it directly can forge X-Forwarded-For",
            "bind the gateway to 127.0.0.1:8080 behind the proxy",
        )
    if not trusted and (settings.public_url or "").startswith("https://"):
        return Finding(
            "trusted_proxies",
            FAIL,
            f"public_url is {settings.public_url} but trusted_proxies = 0: gunicorn serves "
            "plain HTTP, so a proxy terminates TLS in front and every client looks like it",
            "set trusted_proxies = 1",
        )
    return Finding(
        "trusted_proxies",
        OK,
        f"trusted_proxies = {trusted}, gateway bound to {bind}"
        + ("" if arrival else " (run with --server through the proxy to see a request)"),
    )


def check_metrics(
    settings: Settings,
    arrival: Arrival | None,
    session: requests.Session | None = None,
) -> Finding:
    """``/metrics`` answers only where it should: a scraper with ``metrics_token``, or
    loopback clients. Probed through ``public_url`` when it is set."""
    if settings.metrics_token:
        return Finding("metrics", OK, "scrapers must send metrics_token")
    if (
        arrival is not None
        and settings.trusted_proxies == 0
        and arrival.forwarded_for is not None
        and _loopback(arrival.peer)
    ):
        return Finding(
            "metrics",
            FAIL,
            f"requests arrive from the proxy at {arrival.peer} and trusted_proxies = 0: "
            "/metrics answers anyone who reaches the proxy",
            "set trusted_proxies = 1, deny /metrics in the proxy, or set metrics_token",
        )
    if settings.public_url:
        url = settings.public_url.rstrip("/") + "/metrics"
        session = session or requests.Session()
        session.trust_env = False
        # public_url's certificate may come from an organisation's CA (docs/deploy.md).
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
        try:
            response = session.get(url, timeout=PROBE_TIMEOUT_SECONDS, allow_redirects=False)
        except requests.RequestException as exc:
            return Finding(
                "metrics", WARN, f"not probed: {url} did not answer ({type(exc).__name__})"
            )
        response.close()
        if response.status_code == 200:
            return Finding(
                "metrics",
                FAIL,
                f"{url} answered 200 without a token",
                "deny /metrics in the proxy (docs/deploy.md), set trusted_proxies, or set "
                "metrics_token",
            )
        return Finding(
            "metrics", OK, f"{url} refused a scrape without a token (HTTP {response.status_code})"
        )
    return Finding(
        "metrics",
        OK,
        "loopback clients only (no metrics_token; set public_url to probe it from outside)",
    )


# -- audit checkpoints ----------------------------------------------------------------------


def check_audit_signing(store: Store) -> Finding:
    """Checkpoints are signed with this root secret's key, and when the next one is due."""
    signer, policy = store.audit_signer, store.checkpoint_policy
    if signer is None or policy is None:
        return Finding("audit_signing", FAIL, "the store signs no checkpoints")
    with store.read() as tx:
        session = tx.session
        head = session.scalar(select(func.max(AuditEntry.seq))) or 0
        first_at = session.scalar(select(func.min(AuditEntry.at)))
        count = session.scalar(select(func.count()).select_from(AuditCheckpoint)) or 0
        last = session.execute(
            select(AuditCheckpoint.seq, AuditCheckpoint.at, AuditCheckpoint.key_id)
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        ).first()
    next_seq = (head // policy.every + 1) * policy.every
    since = last.at if last is not None else first_at
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    when = f"with entry {next_seq} (the trail is at {head})"
    if since is not None:
        due = since + timedelta(seconds=policy.seconds)
        when += f" or at the first entry after {due.isoformat(timespec='seconds')}"
    if last is None:
        return Finding(
            "audit_signing",
            OK,
            f"no signed checkpoint yet; the first is signed {when}",
        )
    if last.key_id != signer.key_id:
        return Finding(
            "audit_signing",
            FAIL,
            f"the newest checkpoint (seq {last.seq}) was signed by key {last.key_id}, this "
            f"root secret signs with {signer.key_id}: `drawbridge audit verify` fails",
            "restore the root secret that signed the trail (docs/deploy.md, backups)",
        )
    return Finding(
        "audit_signing",
        OK,
        f"{count} signed checkpoint{'s' if count != 1 else ''}, the newest at seq {last.seq} "
        f"by key {signer.key_id}; the next is signed {when}",
    )


# -- all of them ----------------------------------------------------------------------------


@dataclass
class Deployment:
    """What the checks look at. ``store``/``upstream`` are None when they cannot be built
    (``problem`` says why: e.g. no root secret); ``arrival`` is the doctor's own request in
    ``--server`` mode."""

    settings: Settings
    bind: str
    workers: int | None
    store: Store | None = None
    upstream: UpstreamClient | None = None
    upstream_problem: str | None = None
    arrival: Arrival | None = None


def examine(deployment: Deployment) -> list[Finding]:
    """Every check, in the order an operator fixes them."""
    settings = deployment.settings
    findings = [check_database(settings.database_url), check_root_secret(settings)]
    database_ok = findings[0].status == OK
    if database_ok:
        findings.append(check_clock(settings.database_url))
    findings.append(check_redis(settings, deployment.workers))
    findings.append(check_upstream(deployment.upstream, deployment.upstream_problem))
    findings.append(check_trusted_proxies(settings, deployment.bind, deployment.arrival))
    findings.append(check_metrics(settings, deployment.arrival))
    if deployment.store is not None and database_ok:
        findings.append(check_audit_signing(deployment.store))
    else:
        findings.append(
            Finding(
                "audit_signing",
                WARN,
                "not checked: it needs the database and the root secret (see above)",
            )
        )
    return findings
