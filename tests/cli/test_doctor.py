"""``drawbridge doctor`` on the server and ``--server``, and ``GET /admin/v1/doctor``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from werkzeug.serving import make_server

from gateway.cli.exits import EXIT_NOT_ALLOWED
from keys.access.admin_tokens import IssuedToken
from tests.helpers import TEST_ROOT_SECRET, UPSTREAM_URL, Cli, assert_openai_error, free_port

NO_LOCAL_ACCESS = {"DRAWBRIDGE_DATABASE_URL": None, "DRAWBRIDGE_ROOT_SECRET": None}


@pytest.fixture
def backend_lists(upstream: responses.RequestsMock) -> responses.BaseResponse:
    return upstream.get(f"{UPSTREAM_URL}/videos", json={"object": "list", "data": []})


def test_doctor_green_on_a_sound_deployment(
    cli: Cli, backend_lists: responses.BaseResponse
) -> None:
    result = cli("doctor", "--workers", "1")
    lines = result.output.splitlines()
    assert lines[-1] == "8 checks: 0 failed, 0 warnings"
    assert all(line.startswith("ok  ") for line in lines[:-1]), result.output
    assert backend_lists.call_count == 1


def test_doctor_red_on_a_readable_root_secret_file_with_the_fix(
    cli: Cli, tmp_path: Path, backend_lists: responses.BaseResponse
) -> None:
    # The same secret the database was set up with, only in a file others may read.
    path = tmp_path / "root_secret"
    path.write_text(TEST_ROOT_SECRET + "\n")
    path.chmod(0o644)
    env = {"DRAWBRIDGE_ROOT_SECRET": None, "DRAWBRIDGE_ROOT_SECRET_FILE": str(path)}
    result = cli("doctor", "--workers", "1", env=env, code=1)
    assert f"FAIL  root_secret      {path} has mode 0644" in result.output
    assert f"fix: chmod 600 {path}" in result.output
    assert result.output.splitlines()[-1] == "8 checks: 1 failed, 0 warnings"

    document = json.loads(cli("doctor", "--workers", "1", "--json", env=env, code=1).output)
    assert document["ok"] is False
    failed = [item for item in document["findings"] if item["status"] == "fail"]
    assert [item["name"] for item in failed] == ["root_secret"]
    assert set(failed[0]) == {"name", "status", "detail", "fix"}


def test_doctor_warnings_leave_exit_status_0(
    cli: Cli, backend_lists: responses.BaseResponse
) -> None:
    result = cli("doctor", "--workers", "3")
    assert "WARN  redis" in result.output and "fix: set redis_url" in result.output


def test_doctor_without_a_root_secret_still_checks_what_it_can(cli: Cli) -> None:
    result = cli("doctor", env={"DRAWBRIDGE_ROOT_SECRET": None}, code=1)
    assert "ok    database" in result.output
    assert "FAIL  root_secret      no root secret configured" in result.output
    assert "WARN  audit_signing    not checked" in result.output


@pytest.fixture
def server(app: Any) -> Iterator[str]:
    http = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(5)


def test_doctor_server_asks_the_gateway(
    cli: Cli,
    server: str,
    admin: IssuedToken,
    auditor: IssuedToken,
    upstream: responses.RequestsMock,
) -> None:
    upstream.add_passthru(server)
    upstream.get(f"{UPSTREAM_URL}/videos", json={"object": "list", "data": []})
    env = {**NO_LOCAL_ACCESS, "DRAWBRIDGE_SERVER": server, "DRAWBRIDGE_TOKEN": admin.secret}
    document = json.loads(cli("doctor", "--json", env=env, code=None).output)
    statuses = {item["name"]: item["status"] for item in document["findings"]}
    assert statuses["database"] == statuses["upstream"] == statuses["audit_signing"] == "ok"
    # Served by werkzeug, not `drawbridge serve`: the worker count is unknown.
    assert statuses["redis"] == "warn"
    assert "127.0.0.1" in next(
        item["detail"] for item in document["findings"] if item["name"] == "trusted_proxies"
    )
    denied = cli("doctor", env={**env, "DRAWBRIDGE_TOKEN": auditor.secret}, code=EXIT_NOT_ALLOWED)
    assert "permission_denied" in denied.output


def _doctor(client: Any, token: IssuedToken, **environ: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token.secret}"}
    forwarded = environ.pop("forwarded_for", None)
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    response = client.get("/admin/v1/doctor", headers=headers, environ_base=environ)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {item["name"]: item for item in response.get_json()["findings"]}


def test_doctor_api_sees_a_proxy_the_settings_do_not_trust(
    client: Any, admin: IssuedToken, upstream: responses.RequestsMock
) -> None:
    upstream.get(f"{UPSTREAM_URL}/videos", json={"object": "list", "data": []})
    findings = _doctor(client, admin, REMOTE_ADDR="127.0.0.1", forwarded_for="203.0.113.7")
    assert findings["trusted_proxies"]["status"] == "fail"
    assert findings["metrics"]["status"] == "fail"
    direct = _doctor(client, admin, REMOTE_ADDR="127.0.0.1")
    assert direct["trusted_proxies"]["status"] == "ok"


class TestBehindOneProxy:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"trusted_proxies": 1}

    def test_doctor_api_is_green_through_the_proxy(
        self, client: Any, admin: IssuedToken, upstream: responses.RequestsMock
    ) -> None:
        upstream.get(f"{UPSTREAM_URL}/videos", json={"object": "list", "data": []})
        findings = _doctor(client, admin, REMOTE_ADDR="127.0.0.1", forwarded_for="203.0.113.7")
        assert findings["trusted_proxies"]["status"] == "ok"
        assert findings["metrics"]["status"] == "ok"
        afar = _doctor(client, admin, REMOTE_ADDR="198.51.100.4")
        assert afar["trusted_proxies"]["status"] == "fail"


def test_doctor_api_is_for_admins(client: Any, auditor: IssuedToken) -> None:
    response = client.get("/admin/v1/doctor", headers={"Authorization": f"Bearer {auditor.secret}"})
    assert_openai_error(response, 403, "permission_denied")
