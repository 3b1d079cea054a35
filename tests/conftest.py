"""Shared fixtures: databases (SQLite always, PostgreSQL where marked), the domain store,
the Flask app with a fake clock, and factories for testers, keys and admin tokens.

Tests that need PostgreSQL or Redis skip with a clear message on a laptop without them, and
fail under CI (CI=true), where the services must be there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from sqlalchemy import create_engine, text

from gateway.app import create_app
from gateway.settings import Settings, load_settings
from gateway.state import GatewayState, build_state
from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.db import Base
from keys.migrate import upgrade
from keys.models import Tester
from keys.store import Store
from tests.helpers import (
    TEST_ROOT_SECRET,
    UPSTREAM_CREDENTIAL,
    UPSTREAM_URL,
    Cli,
    FakeClock,
    service_unavailable,
)
from tests.private_services import PrivatePostgres

POSTGRES_SERVER_URL = os.environ.get(
    "DRAWBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Unit tests own this Redis database number and flush it before each test that uses it;
# integration fleets own the number below it. Under pytest-xdist (`make test`) each worker
# takes a pair of its own, counting down: gw0 14 and 13, gw1 12 and 11, and so on (mod 16).
REDIS_TEST_URL = os.environ.get("DRAWBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def worker_redis_url(offset: int) -> str:
    """This worker's Redis test database: ``offset`` 0 for unit tests, 1 for fleets."""
    parts = urllib.parse.urlsplit(REDIS_TEST_URL)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    number = (int(parts.path.strip("/") or 0) - 2 * worker - offset) % 16
    return urllib.parse.urlunsplit(parts._replace(path=f"/{number}"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_databases: run the test on SQLite and PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_databases") is not None
        metafunc.parametrize("backend", ["sqlite", "postgresql"] if both else ["sqlite"])


@pytest.fixture(autouse=True)
def hermetic_environment() -> Iterator[None]:
    """What a test makes the product write into this process's environment for its
    workers (the gunicorn worker count, the metrics spool directory) goes when the test
    does: pytest-xdist runs the files of one worker process in no fixed order."""
    saved = dict(os.environ)
    yield
    for name in os.environ.keys() - saved.keys() - {"PYTEST_CURRENT_TEST"}:
        del os.environ[name]
    for name, value in saved.items():
        if name != "PYTEST_CURRENT_TEST" and os.environ.get(name) != value:
            os.environ[name] = value


# -- databases -------------------------------------------------------------------------


def _pg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server URL, after checking that PostgreSQL answers."""
    try:
        engine = create_engine(_pg(POSTGRES_SERVER_URL), connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{POSTGRES_SERVER_URL}: {type(exc).__name__}")
    return POSTGRES_SERVER_URL


@pytest.fixture(scope="session")
def make_postgres_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Create fresh, migrated databases on the server; all dropped at the end."""
    admin = create_engine(_pg(postgres_server), isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make() -> str:
        name = f"drawbridge_test_{secrets.token_hex(6)}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
        engine = create_engine(_pg(url))
        upgrade(engine)
        engine.dispose()
        return url

    yield make
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_database(make_postgres_database: Callable[[], str]) -> str:
    """One migrated database shared by the session's PostgreSQL unit tests."""
    return make_postgres_database()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "drawbridge.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path / "drawbridge.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_database")
    yield url
    engine = create_engine(_pg(url))
    with engine.begin() as connection:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


# -- redis -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> str:
    """This worker's unit-test database's URL, after checking that Redis answers."""
    import redis

    url = worker_redis_url(0)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        service_unavailable("Redis", f"{url}: {type(exc).__name__}")
    return url


@pytest.fixture(scope="session")
def fleet_redis_server(redis_server: str) -> str:
    """This worker's database for integration fleets (a module that needs it empty flushes it)."""
    return worker_redis_url(1)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The Redis test database, empty at the start of the test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the module's own (tests/private_services.py), for fault tests
    that stop and start it: never the machine's server."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# -- the gateway -----------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, Any], tmp_path: Path) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        # The host's content cache of delivered videos: the test's own (not the working
        # directory, where a PostgreSQL test's would land).
        "provenance_cache_dir": str(tmp_path / "provenance-cache"),
        "root_secret": TEST_ROOT_SECRET,
        "upstream_url": UPSTREAM_URL,
        "upstream_api_key": UPSTREAM_CREDENTIAL,
        "upstream_read_timeout": 2.0,
        "upstream_deadline": 5.0,
        "database_pool_size": 3,
        "reconcile_interval_seconds": 0,
    }
    values.update(settings_overrides)
    return load_settings(environ={}, **values)


@pytest.fixture
def state(settings: Settings, clock: FakeClock) -> Iterator[GatewayState]:
    state = build_state(settings)
    state.store.clock = clock
    yield state
    # Now, not a second later from the flusher thread, into the next test's database.
    state.usage.flush()
    state.anomalies.close()
    state.upstream.close()
    state.store.database.dispose()


@pytest.fixture
def store(state: GatewayState) -> Store:
    return state.store


@pytest.fixture
def app(state: GatewayState) -> Any:
    app = create_app(state=state)
    app.testing = True
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def upstream() -> Iterator[responses.RequestsMock]:
    """The generation backend, faked at the HTTP layer for unit tests (a module that needs
    more, such as a stateful backend, defines its own ``upstream``)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def cli(database_url: str) -> Cli:
    """``cli(*args, code=0, env=None, stdin=None)``: the drawbridge command line on the test's
    database, with the settings the ``settings`` fixture uses."""
    return Cli(
        {
            "DRAWBRIDGE_DATABASE_URL": database_url,
            "DRAWBRIDGE_ROOT_SECRET": TEST_ROOT_SECRET,
            "DRAWBRIDGE_UPSTREAM_URL": UPSTREAM_URL,
            "DRAWBRIDGE_UPSTREAM_API_KEY": UPSTREAM_CREDENTIAL,
        }
    )


# -- factories -------------------------------------------------------------------------


@pytest.fixture
def make_tester(store: Store) -> Callable[..., Tester]:
    counter = iter(range(1, 1_000_000))

    def make(name: str = "Ada Tester", cohort: str = "default", email: str | None = None) -> Tester:
        with store.transaction() as tx:
            return tx.testers.add(
                name,
                email or f"tester{next(counter)}@example.com",
                "test:setup",
                cohort=cohort,
                create_cohort=True,
            )

    return make


@pytest.fixture
def make_key(store: Store, make_tester: Callable[..., Tester]) -> Callable[..., IssuedKey]:
    def make(tester_id: str | None = None, **options: Any) -> IssuedKey:
        tester_id = tester_id or make_tester().id
        with store.transaction() as tx:
            return tx.keys.issue(tester_id, "test:setup", **options)

    return make


@pytest.fixture
def make_token(store: Store) -> Callable[..., IssuedToken]:
    def make(role: str = "admin", name: str | None = None) -> IssuedToken:
        with store.transaction() as tx:
            return tx.tokens.create(name or f"{role} token", role, "test:setup")

    return make


@pytest.fixture
def tester(make_tester: Callable[..., Tester]) -> Tester:
    return make_tester()


@pytest.fixture
def key(make_key: Callable[..., IssuedKey], tester: Tester) -> IssuedKey:
    """A key of ``tester`` (a module's own ``tester`` fixture, where it has one)."""
    return make_key(tester.id)


@pytest.fixture
def admin(make_token: Callable[..., IssuedToken]) -> IssuedToken:
    return make_token("admin", "Ops Admin")


@pytest.fixture
def approver(make_token: Callable[..., IssuedToken]) -> IssuedToken:
    return make_token("approver", "Reviewer")


@pytest.fixture
def auditor(make_token: Callable[..., IssuedToken]) -> IssuedToken:
    return make_token("auditor", "Compliance")


# -- after the whole suite -------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Grep every log, dump, export and metrics file the tests wrote for raw secrets; any
    found fails the run (tests/leak_sweep.py)."""
    from tests.leak_sweep import outputs, sweep

    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller sweeps every worker's files at the end
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or session.config.option.collectonly or not session.testscollected:
        return
    root = factory.getbasetemp()  # the workers' own (popen-gw0, ...) are under it
    leaks = sweep(root)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        files = sum(1 for _ in outputs(root))
        reporter.write_line(
            f"leak sweep: {files} log/export/dump/metrics files, {len(leaks)} raw secrets"
        )
        for line in leaks:
            reporter.write_line(line, red=True)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
