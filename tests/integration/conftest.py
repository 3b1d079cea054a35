"""Live processes for the integration tests.

One simulator per session (a real gunicorn process) and one gateway per database backend
(``python -m gateway serve`` under gunicorn, two workers), parametrized over SQLite and
PostgreSQL. The database is migrated and the first admin token, tester and key are made with
the ``drawbridge`` CLI before the gateway starts. Processes are shared to keep the suite
fast; every test makes its own testers and keys, so tests do not see each other's data.

The gateway also gets ``--gunicorn-config`` with a gunicorn access log that names the worker
answering each path (no query strings, no headers), so tests can see both workers answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from tests.helpers import free_port
from tests.integration.live import (
    LiveGateway,
    LiveSimulator,
    TesterKey,
    start_gateway,
    start_simulator,
)

# Small enough to download quickly, large enough to take several chunks through the proxy.
SIM_CONTENT_BYTES = 700_000


@pytest.fixture(scope="session")
def master_credential() -> str:
    """The upstream's credential: the simulator demands it, only the gateway holds it."""
    return "sim-master-" + secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def simulator(
    tmp_path_factory: pytest.TempPathFactory, master_credential: str
) -> Iterator[LiveSimulator]:
    log_path = tmp_path_factory.mktemp("simulator") / "simulator.log"
    simulator = start_simulator(free_port(), master_credential, log_path, SIM_CONTENT_BYTES)
    yield simulator
    simulator.process.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def live_gateway(
    request: pytest.FixtureRequest,
    simulator: LiveSimulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveGateway]:
    """A running gateway on a fresh database of the parametrized backend."""
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"gateway-{backend}")
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp / 'drawbridge.db'}"
    else:
        make_database: Callable[[], str] = request.getfixturevalue("make_postgres_database")
        database_url = make_database()
    port = free_port()
    gateway = LiveGateway.before(
        simulator,
        database_url,
        port,
        tmp / "gateway.log",
        # Every test of the session calls this one gateway from 127.0.0.1, many with refused
        # keys on purpose: the per-address block (tests/admission/test_rate_limits.py pins it) would
        # otherwise refuse whichever test comes next within the same minute.
        DRAWBRIDGE_AUTH_FAILURES_PER_MINUTE="1000000",
    )

    # An operator's first steps, through the CLI.
    # The SQLite file does not exist yet; the PostgreSQL database was made migrated.
    upgraded = gateway.cli("db", "upgrade")
    assert ("from empty to" if backend == "sqlite" else "is already at") in upgraded
    token = gateway.cli(
        "tokens", "create", "--name", "integration admin", "--role", "admin", "--json"
    )
    assert token["role"] == "admin" and token["secret"].startswith("drwbadm_")
    gateway.admin_token, gateway.admin_token_id = token["secret"], token["id"]
    gateway.issued_secrets.append(token["secret"])
    seed = gateway.issue_key(gateway.new_tester(via="cli"), via="cli")

    gateway.process = start_gateway(gateway, port, tmp)
    try:
        # What the CLI made works on the live gateway: the admin token and the tester key.
        whoami = gateway.admin_ok("GET", "/whoami")
        assert whoami == {"id": token["id"], "name": "integration admin", "role": "admin"}
        me = gateway.tester_get("/me", seed.secret)
        assert me.status_code == 200, me.text
        assert me.json()["key"]["id"] == seed.key_id
        yield gateway
    finally:
        gateway.process.stop()


@pytest.fixture(autouse=True)
def _close_sdk_clients(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "live_gateway" in request.fixturenames:
        gateway: LiveGateway = request.getfixturevalue("live_gateway")
        gateway.close_clients()


@pytest.fixture
def make_tester_key(live_gateway: LiveGateway) -> Callable[..., TesterKey]:
    """Fresh tester + key: ``make_tester_key(via="api" | "cli", **issue_payload)``."""
    return live_gateway.new_tester_key


@pytest.fixture
def tester_key(make_tester_key: Callable[..., TesterKey]) -> TesterKey:
    return make_tester_key()
