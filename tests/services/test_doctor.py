"""``drawbridge doctor``'s checks, each green on a sound deployment and red, with the right
finding, on the broken setting it is about (gateway/services/doctor.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from sqlalchemy import create_engine

from gateway.services import doctor
from gateway.services.doctor import FAIL, OK, WARN, Arrival, Finding
from gateway.settings import Settings, load_settings
from gateway.state import GatewayState, build_store
from keys.access.vault import Vault, new_root_secret
from keys.store import Store
from tests.helpers import TEST_ROOT_SECRET, UPSTREAM_URL, free_port


def settings_with(**values: Any) -> Settings:
    return load_settings(environ={}, **values)


MIGRATIONS = Path(__file__).parents[2] / "keys" / "migrations" / "versions"


# -- database and clock --------------------------------------------------------------------


def test_database_migrated_to_head_is_ok(database_url: str) -> None:
    finding = doctor.check_database(database_url)
    head = sorted(path.name[:4] for path in MIGRATIONS.glob("0*.py"))[-1]
    assert finding.status == OK and f"{head} (head)" in finding.detail


def test_database_behind_head_fails_naming_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    create_engine(url).connect().close()  # the file exists, with no schema
    finding = doctor.check_database(url)
    assert finding.status == FAIL
    assert "not migrated" in finding.detail and finding.fix == "run `drawbridge db upgrade`"


def test_database_missing_sqlite_file_fails(tmp_path: Path) -> None:
    finding = doctor.check_database(f"sqlite:///{tmp_path / 'typo.db'}")
    assert finding.status == FAIL and "does not exist" in finding.detail


def test_database_unreachable_fails_with_the_password_masked() -> None:
    url = f"postgresql://drawbridge:hunter2@127.0.0.1:{free_port()}/drawbridge"
    finding = doctor.check_database(url)
    assert finding.status == FAIL and "cannot reach" in finding.detail
    assert "hunter2" not in finding.detail and "pg_hba.conf" in (finding.fix or "")


def test_clock_on_sqlite_is_this_hosts(database_url: str) -> None:
    assert doctor.check_clock(database_url).status == OK


def test_clock_against_postgres(postgres_database: str) -> None:
    assert doctor.check_clock(postgres_database).status == OK
    slow = doctor.check_clock(
        postgres_database, now=lambda: datetime.now(UTC) - timedelta(seconds=5)
    )
    assert slow.status == WARN and "behind PostgreSQL" in slow.detail
    fast = doctor.check_clock(
        postgres_database, now=lambda: datetime.now(UTC) + timedelta(minutes=2)
    )
    assert fast.status == FAIL and "ahead of PostgreSQL" in fast.detail
    assert "NTP" in (fast.fix or "")


# -- Redis -----------------------------------------------------------------------------------


def test_redis_not_needed_by_one_worker_on_one_instance() -> None:
    assert doctor.check_redis(settings_with(), workers=1).status == OK


@pytest.mark.parametrize(("workers", "instances"), [(2, 1), (1, 3), (None, 1)])
def test_redis_missing_with_several_processes_warns(workers: int | None, instances: int) -> None:
    finding = doctor.check_redis(settings_with(instances=instances), workers=workers)
    assert finding.status == WARN and "redis_url" in (finding.fix or "")


def test_redis_configured_and_answering_is_ok(redis_url: str) -> None:
    finding = doctor.check_redis(settings_with(redis_url=redis_url, instances=2), workers=4)
    assert finding.status == OK and "4 workers on 2 instances" in finding.detail


def test_redis_configured_but_down_fails() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    finding = doctor.check_redis(settings_with(redis_url=url), workers=2)
    assert finding.status == FAIL and "does not answer" in finding.detail


# -- the root secret -------------------------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "root_secret"
    path.write_text(new_root_secret() + "\n")
    path.chmod(0o600)
    return path


def test_root_secret_file_0600_owned_by_the_gateway_user_is_ok(secret_file: Path) -> None:
    finding = doctor.check_root_secret(settings_with(root_secret_file=str(secret_file)))
    assert finding.status == OK and "0600" in finding.detail


def test_root_secret_file_readable_by_others_fails(secret_file: Path) -> None:
    secret_file.chmod(0o640)
    finding = doctor.check_root_secret(settings_with(root_secret_file=str(secret_file)))
    assert finding.status == FAIL and "0640" in finding.detail
    assert finding.fix == f"chmod 600 {secret_file}"


def test_root_secret_file_of_another_user_fails(secret_file: Path) -> None:
    settings = settings_with(root_secret_file=str(secret_file))
    finding = doctor.check_root_secret(settings, uid=os.geteuid() + 1)
    assert finding.status == FAIL and "owned by uid" in finding.detail
    assert "chown" in (finding.fix or "")


def test_root_secret_missing_or_malformed_fails(tmp_path: Path, secret_file: Path) -> None:
    gone = doctor.check_root_secret(settings_with(root_secret_file=str(tmp_path / "nope")))
    assert gone.status == FAIL and "invalidates every key" in (gone.fix or "")
    secret_file.write_text("not base64 at all!\n")
    bad = doctor.check_root_secret(settings_with(root_secret_file=str(secret_file)))
    assert bad.status == FAIL and "base64" in bad.detail
    assert doctor.check_root_secret(settings_with()).status == FAIL


def test_root_secret_from_the_environment_is_ok() -> None:
    finding = doctor.check_root_secret(settings_with(root_secret=TEST_ROOT_SECRET))
    assert finding.status == OK and "environment" in finding.detail
    assert TEST_ROOT_SECRET not in finding.detail


# -- the backend -----------------------------------------------------------------------------


def test_upstream_accepting_the_credential_is_ok_and_spends_nothing(
    state: GatewayState, upstream: responses.RequestsMock
) -> None:
    listed = upstream.get(f"{UPSTREAM_URL}/videos", json={"object": "list", "data": []})
    finding = doctor.check_upstream(state.upstream)
    assert finding.status == OK
    assert listed.call_count == 1 and len(upstream.calls) == 1
    assert upstream.calls[0].request.method == "GET"


def test_upstream_refusing_the_credential_fails(
    state: GatewayState, upstream: responses.RequestsMock
) -> None:
    upstream.get(f"{UPSTREAM_URL}/videos", status=401, json={"error": {"message": "no"}})
    finding = doctor.check_upstream(state.upstream)
    assert finding.status == FAIL and "refuses the gateway's credential" in finding.detail
    assert "DRAWBRIDGE_UPSTREAM_API_KEY" in (finding.fix or "")


def test_upstream_out_of_reach_or_unconfigured_fails(
    state: GatewayState, upstream: responses.RequestsMock
) -> None:
    upstream.get(f"{UPSTREAM_URL}/videos", body=requests.ConnectionError("refused"))
    finding = doctor.check_upstream(state.upstream)
    assert finding.status == FAIL and "could not be reached" in finding.detail
    assert doctor.check_upstream(None, "no upstream credential").status == FAIL


# -- proxies and /metrics --------------------------------------------------------------------

BEHIND_NGINX = Arrival(peer="127.0.0.1", forwarded_for="203.0.113.7")
DIRECT_FROM_AFAR = Arrival(peer="203.0.113.7", forwarded_for=None)
DIRECT_ON_THE_HOST = Arrival(peer="127.0.0.1", forwarded_for=None)


def test_trusted_proxies_matching_a_proxy_in_front_is_ok() -> None:
    settings = settings_with(trusted_proxies=1)
    assert doctor.check_trusted_proxies(settings, "127.0.0.1:8080", BEHIND_NGINX).status == OK


def test_trusted_proxies_0_behind_a_proxy_fails() -> None:
    finding = doctor.check_trusted_proxies(settings_with(), "127.0.0.1:8080", BEHIND_NGINX)
    assert finding.status == FAIL and "X-Forwarded-For" in finding.detail
    assert finding.fix == "set trusted_proxies = 1 (one nginx in front)"


def test_trusted_proxies_with_clients_reaching_the_gateway_directly_fails() -> None:
    settings = settings_with(trusted_proxies=1)
    finding = doctor.check_trusted_proxies(settings, "0.0.0.0:8080", DIRECT_FROM_AFAR)
    assert finding.status == FAIL and "forge X-Forwarded-For" in finding.detail
    on_host = doctor.check_trusted_proxies(settings, "127.0.0.1:8080", DIRECT_ON_THE_HOST)
    assert on_host.status == WARN and "not seen" in on_host.detail


def test_trusted_proxies_above_the_hops_seen_fails() -> None:
    settings = settings_with(trusted_proxies=2)
    finding = doctor.check_trusted_proxies(settings, "127.0.0.1:8080", BEHIND_NGINX)
    assert finding.status == FAIL and finding.fix == "set trusted_proxies = 1"


def test_trusted_proxies_from_settings_alone() -> None:
    bound_wide = doctor.check_trusted_proxies(
        settings_with(trusted_proxies=1), "0.0.0.0:8080", None
    )
    assert bound_wide.status == FAIL
    https_without = settings_with(public_url="https://gw.example.com")
    assert doctor.check_trusted_proxies(https_without, "127.0.0.1:8080", None).status == FAIL
    plain = doctor.check_trusted_proxies(settings_with(), "127.0.0.1:8080", None)
    assert plain.status == OK


def test_metrics_with_a_token_or_loopback_only_is_ok() -> None:
    assert doctor.check_metrics(settings_with(metrics_token="t0ken"), BEHIND_NGINX).status == OK
    proxied = settings_with(trusted_proxies=1)
    assert doctor.check_metrics(proxied, BEHIND_NGINX).status == OK


def test_metrics_open_through_a_proxy_without_trusted_proxies_fails() -> None:
    finding = doctor.check_metrics(settings_with(), BEHIND_NGINX)
    assert finding.status == FAIL and "anyone who reaches the proxy" in finding.detail


def test_metrics_probed_through_public_url(upstream: responses.RequestsMock) -> None:
    settings = settings_with(public_url="https://gw.test", trusted_proxies=1)
    upstream.get("https://gw.test/metrics", status=200, body="drawbridge_up 1\n")
    open_ = doctor.check_metrics(settings, None)
    assert open_.status == FAIL and "answered 200 without a token" in open_.detail
    upstream.replace(responses.GET, "https://gw.test/metrics", status=403)
    assert doctor.check_metrics(settings, None).status == OK
    upstream.replace(responses.GET, "https://gw.test/metrics", body=requests.ConnectionError())
    assert doctor.check_metrics(settings, None).status == WARN


# -- audit checkpoints -----------------------------------------------------------------------


def _append(store: Store, count: int) -> None:
    with store.transaction() as tx:
        for number in range(count):
            tx.audit.append("admin:alice", "key.revoke", f"key_{number}", reason="r")


def test_audit_signing_on_a_fresh_trail_says_when_the_first_is_due(store: Store) -> None:
    finding = doctor.check_audit_signing(store)
    assert finding.status == OK
    assert "no signed checkpoint yet; the first is signed with entry 100" in finding.detail
    _append(store, 3)
    later = doctor.check_audit_signing(store)
    assert "(the trail is at 3) or at the first entry after" in later.detail


def test_audit_signing_counts_checkpoints(store: Store) -> None:
    _append(store, 100)
    finding = doctor.check_audit_signing(store)
    assert finding.status == OK and "1 signed checkpoint, the newest at seq 100" in finding.detail


def test_audit_signing_by_another_root_secret_fails(store: Store, settings: Settings) -> None:
    _append(store, 100)
    other = build_store(settings, Vault(new_root_secret()))
    try:
        finding = doctor.check_audit_signing(other)
    finally:
        other.database.dispose()
    assert finding.status == FAIL and "audit verify` fails" in finding.detail
    assert "restore the root secret" in (finding.fix or "")


# -- the verdict -----------------------------------------------------------------------------


def test_exit_status_fails_only_on_a_failure() -> None:
    def findings(*statuses: str) -> list[Finding]:
        return [Finding(f"c{i}", status, "d") for i, status in enumerate(statuses)]

    assert doctor.exit_status(findings(OK, OK)) == 0
    assert doctor.exit_status(findings(OK, WARN)) == 0
    assert doctor.exit_status(findings(WARN, FAIL)) == 1


def test_the_worker_count_drawbridge_serve_passes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.process.server import WORKERS_VARIABLE

    assert WORKERS_VARIABLE == doctor.WORKERS_VARIABLE
    monkeypatch.setenv(WORKERS_VARIABLE, "4")
    assert doctor.workers_from_environment() == 4
    monkeypatch.delenv(WORKERS_VARIABLE)
    assert doctor.workers_from_environment() is None


def test_examine_runs_every_check_in_order(
    state: GatewayState, upstream: responses.RequestsMock
) -> None:
    upstream.get(f"{UPSTREAM_URL}/videos", json={"object": "list", "data": []})
    deployment = doctor.Deployment(
        state.settings, "127.0.0.1:8080", 1, store=state.store, upstream=state.upstream
    )
    found = doctor.examine(deployment)
    assert [finding.name for finding in found] == [
        "database",
        "root_secret",
        "clock",
        "redis",
        "upstream",
        "trusted_proxies",
        "metrics",
        "audit_signing",
    ]
    assert [finding.status for finding in found] == [OK] * 8
