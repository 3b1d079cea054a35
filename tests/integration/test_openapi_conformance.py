"""The admin API keeps the promises of its OpenAPI document: schemathesis against a live gateway.

Every operation of ``/admin/v1/openapi.json`` is exercised with generated valid and invalid
requests and all of schemathesis' checks (no server errors, declared statuses, content types
and headers, response schemas, invalid input refused, valid input accepted, ``Allow`` on
405, ...). The run has a gateway of its own: it revokes keys in bulk and raises the kill
switch, which would disturb any test sharing the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.integration.live import (
    HTTP_TIMEOUT,
    LiveGateway,
    LiveSimulator,
    http_session,
    start_gateway,
)

# Bounded: about a minute on a quiet machine. A fixed seed makes a failure reproducible;
# DRAWBRIDGE_SCHEMATHESIS_SEED explores other inputs.
MAX_EXAMPLES = 20
RUN_TIMEOUT = 300

pytestmark = [pytest.mark.integration, pytest.mark.timeout(RUN_TIMEOUT + 120)]
SEED = os.environ.get("DRAWBRIDGE_SCHEMATHESIS_SEED", "20261204")

# Rules the document cannot state, so a request valid field by field may still be a 400
# invalid_value, for these operations only: the usage reads relate two parameters (until
# after since; a daily range of at most 366 days; a cursor naming an event that exists) or
# need a real time (2026-02-30 matches the pattern); an expiry must lie in the future; a
# proof key must be a real public key and an uploaded file a real video (no schema says so).
CONFIG = """\
[headers]
Authorization = "Bearer {token}"

[[operations]]
include-operation-id = [
  "listUsageEvents", "exportUsage", "getDailyUsage", "getUsageRefusals", "getKeyReport",
  "issueKey", "createToken",
  "bindProofKey", "identifyVideo",
]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

# DELETE /testers/{id}/policy removes the tester's overrides; GET on that path is the policy
# in force, which the cohort still defines: 200 after the DELETE is the design, not a leak.
[[operations]]
include-operation-id = ["clearTesterPolicy", "getTesterPolicy"]
checks.use_after_free.enabled = false
"""


@pytest.fixture(scope="module")
def conformance_gateway(
    simulator: LiveSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """A gateway on SQLite of its own, with an admin token, a tester and a key."""
    tmp = tmp_path_factory.mktemp("gateway-conformance")
    database_url = f"sqlite:///{tmp / 'drawbridge.db'}"
    port = free_port()
    gateway = LiveGateway.before(simulator, database_url, port, tmp / "gateway.log")
    gateway.cli("db", "upgrade")
    token = gateway.cli("tokens", "create", "--name", "schemathesis", "--role", "admin", "--json")
    gateway.admin_token, gateway.admin_token_id = token["secret"], token["id"]
    gateway.issue_key(gateway.new_tester(via="cli"), via="cli")
    gateway.process = start_gateway(gateway, port, tmp, workers=1, threads=8)
    try:
        _hold_generations(gateway)
        yield gateway
    finally:
        gateway.process.stop()


def _hold_generations(gateway: LiveGateway) -> None:
    """Held requests in the approval queue, so the approvers' operations meet real ones."""
    held = gateway.new_tester_key()
    gateway.admin_ok("PUT", f"/testers/{held.tester_id}/policy", json={"hold_generations": True})
    # Two: held generations count against the default cohort's two concurrent jobs.
    for prompt in ("a lighthouse at dawn", "a fox in the snow"):
        with http_session() as session:
            response = session.post(
                f"{gateway.api_url}/videos",
                json={"prompt": prompt, "seconds": "4"},
                headers={"Authorization": f"Bearer {held.secret}"},
                timeout=HTTP_TIMEOUT,
            )
        assert response.status_code < 300, response.text
    pending = gateway.admin_ok("GET", "/approvals?status=pending")["data"]
    assert len(pending) == 2


def test_admin_api_conforms_to_its_openapi_document(
    conformance_gateway: LiveGateway, tmp_path: Path
) -> None:
    gateway = conformance_gateway
    config = tmp_path / "schemathesis.toml"
    # The token goes in a file, not on a command line other users can read.
    config.write_text(CONFIG.replace("{token}", gateway.admin_token))
    st = Path(sys.executable).with_name("st")
    argv = [
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{gateway.base}/admin/v1/openapi.json",
        "--url",
        f"{gateway.base}/admin/v1",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--request-timeout",
        "10",
        # Revoking the run's own token would turn every later request into a 401;
        # tests/admin/test_admin_api.py covers token revocation.
        "--exclude-operation-id",
        "revokeToken",
        "--no-color",
    ]
    env = {**os.environ, "NO_COLOR": "1"}
    # In tmp_path: schemathesis keeps a cache of crashes in its working directory.
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    # Never print the admin token: schemathesis filters it, but say so here too.
    assert gateway.admin_token not in output
    summary = output[-6000:]
    assert result.returncode == 0, summary
    assert "Server error" not in output, summary
    assert "passed" in output and "failures" not in output.splitlines()[-1], summary
