"""What operators and auditors meet first: clear refusals of a missing or unmigrated
database, ``db upgrade`` saying what it did, unknown cohorts refused, a refused upstream
credential made visible, the upstream/quota/anomaly metrics, a client's X-Request-Id kept
only when it is plain, and the packaging (declared imports, license, shipped examples)."""

from __future__ import annotations

import ast
import json
import logging
import re
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from sqlalchemy import create_engine, select

from gateway.app import create_app
from gateway.cli import main
from gateway.cli.base import COMMAND_MODULES, COMMAND_SUMMARIES, load_commands
from gateway.settings import Settings
from keys.access.lifecycle import IssuedKey
from keys.errors import SchemaNotCurrent
from keys.limits.policies import Policy
from keys.migrate import display_url, head_revision, upgrade
from keys.models import Tester, UsageEvent
from keys.store import Store
from tests.flows import FakeBackend, create_video
from tests.helpers import (
    UPSTREAM_CREDENTIAL,
    UPSTREAM_URL,
    Cli,
    bearer,
    free_port,
)
from tests.observability.test_metrics import samples, scrape

ROOT = Path(__file__).resolve().parents[2]
HEAD = head_revision()


def database_at(url: str) -> dict[str, str]:
    """The CLI's environment for another database than the test's."""
    return {"DRAWBRIDGE_DATABASE_URL": url}


def sqlite_at(path: Path, revision: str | None) -> str:
    """A SQLite database at ``revision`` (None: an empty file)."""
    url = f"sqlite:///{path}"
    if revision is None:
        sqlite3.connect(path).close()
        return url
    engine = create_engine(url)
    upgrade(engine, revision)
    engine.dispose()
    return url


# -- a missing or unmigrated database --------------------------------------------------


@pytest.mark.parametrize(("revision", "shown"), [(None, "an empty schema"), ("0003", "0003")])
def test_cli_refuses_an_unmigrated_database_and_names_the_fix(
    cli: Cli, tmp_path: Path, revision: str | None, shown: str
) -> None:
    url = sqlite_at(tmp_path / "old.db", revision)

    result = cli("testers", "list", env=database_at(url), code=1)

    assert (
        f"the database at {url} is not migrated (at {shown}, head is {HEAD}): "
        "run `drawbridge db upgrade`" in result.output
    )
    assert "Traceback" not in result.output


def test_a_mistyped_sqlite_path_is_refused_not_created(cli: Cli, tmp_path: Path) -> None:
    directory = tmp_path / "elsewhere"  # not tmp_path itself, which holds the test's database
    directory.mkdir()
    typo = directory / "drawbrige.db"

    result = cli("keys", "list", env=database_at(f"sqlite:///{typo}"), code=1)

    assert f"the SQLite database {typo} does not exist" in result.output
    assert "`drawbridge db upgrade`" in result.output
    assert list(directory.iterdir()) == []  # neither the database nor its stamp


def test_db_upgrade_says_what_it_did(cli: Cli, tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'new.db'}"
    migrated = cli("db", "upgrade", env=database_at(fresh))
    assert migrated.output.strip() == f"migrated {fresh} from empty to {HEAD}"
    again = cli("db", "upgrade", env=database_at(fresh))
    assert again.output.strip() == f"{fresh} is already at {HEAD}"
    older = sqlite_at(tmp_path / "older.db", "0003")
    migrated = cli("db", "upgrade", env=database_at(older))
    assert migrated.output.strip() == f"migrated {older} from 0003 to {HEAD}"
    cli("testers", "list", env=database_at(older))


def test_the_operations_guide_names_the_current_head() -> None:
    """docs/operations.md quotes these messages: with the head revision of today's code."""
    text = (ROOT / "docs" / "operations.md").read_text()
    quoted = set(re.findall(r"head is (\d{4})|from empty to (\d{4})|already at (\d{4})", text))
    assert quoted and {revision for match in quoted for revision in match if revision} == {HEAD}


def test_messages_never_show_a_database_password() -> None:
    shown = display_url("postgresql://drawbridge:s3cret-pass@db.internal:5432/drawbridge")
    assert "s3cret-pass" not in shown and shown.endswith("@db.internal:5432/drawbridge")


def test_the_app_factory_refuses_an_unmigrated_database(tmp_path: Path, settings: Settings) -> None:
    import dataclasses

    url = sqlite_at(tmp_path / "old.db", "0002")
    with pytest.raises(SchemaNotCurrent, match=r"at 0002, head is .*drawbridge db upgrade"):
        create_app(dataclasses.replace(settings, database_url=url))
    missing = tmp_path / "missing.db"
    with pytest.raises(SchemaNotCurrent, match="does not exist"):
        create_app(dataclasses.replace(settings, database_url=f"sqlite:///{missing}"))
    assert not missing.exists()


def test_an_unreachable_database_is_one_line_for_the_cli_and_not_fatal_for_the_gateway(
    cli: Cli, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import dataclasses

    down = f"postgresql://drawbridge:s3cret@127.0.0.1:{free_port()}/drawbridge"

    result = cli("keys", "list", env=database_at(down), code=1)

    assert "cannot reach the database at postgresql+psycopg://drawbridge:***@" in result.output
    assert "(database_unavailable)" in result.output and "s3cret" not in result.output
    # A gateway starts (failing closed, /readyz saying why) and serves once it answers.
    app = create_app(dataclasses.replace(settings, database_url=down))
    assert "starting anyway" in caplog.text
    assert app.test_client().get("/readyz").status_code == 503


# -- cohorts ---------------------------------------------------------------------------


def test_cli_refuses_an_unknown_cohort_unless_asked_to_create_it(cli: Cli, store: Store) -> None:
    with store.transaction() as tx:
        tx.policies.set_policy("artists", Policy(), "test:setup")

    refused = cli("testers", "add", "Ann", "--email", "a@example.com", "--cohort", "artist", code=1)

    assert "no cohort 'artist' (known: artists, default)" in refused.output
    assert "--create-cohort" in refused.output and "(unknown_cohort)" in refused.output
    created = cli(
        *("testers", "add", "Ann", "--email", "a@example.com", "--cohort", "artist"),
        *("--create-cohort", "--json"),
    )
    assert json.loads(created.output)["cohort"] == "artist"
    # Known cohorts need no flag: the one with a policy, and the one just created.
    for n, cohort in enumerate(["artists", "artist", "default"]):
        cli("testers", "add", "B", "--email", f"b{n}@example.com", "--cohort", cohort)


# -- the upstream refusing the gateway's credential ------------------------------------


def test_a_refused_upstream_credential_is_logged_counted_and_shown_in_readyz(
    client: Any,
    make_key: Callable[..., IssuedKey],
    upstream: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = make_key()
    assert client.get("/readyz").get_json()["detail"] == {"upstream_auth": "not checked yet"}
    upstream.add(responses.POST, f"{UPSTREAM_URL}/videos", status=401, json={"error": {}})
    caplog.set_level(logging.INFO, logger="drawbridge.upstream")

    for _ in range(3):
        assert create_video(client, key).status_code == 502

    errors = [r for r in caplog.records if r.name == "drawbridge.upstream" and r.levelno >= 40]
    assert len(errors) == 1  # rate-limited: once a minute per process
    assert "refuses the gateway's credential (HTTP 401" in errors[0].getMessage()
    assert UPSTREAM_CREDENTIAL not in caplog.text
    ready = client.get("/readyz")
    assert ready.status_code == 200  # not a readiness failure (gateway/upstream/credential.py)
    assert ready.get_json()["detail"]["upstream_auth"].startswith("failing since ")
    assert ready.get_json()["detail"]["upstream_auth"].endswith("(HTTP 401)")
    values = samples(scrape(client))
    assert values["drawbridge_upstream_auth_failures_total"] == 3
    assert values['drawbridge_upstream_responses_total{status="401"}'] == 3

    # The credential is fixed upstream: the next answer clears the state.
    upstream.replace(
        responses.POST,
        f"{UPSTREAM_URL}/videos",
        json={"id": "video_1", "object": "video", "status": "queued"},
    )
    assert create_video(client, key).status_code == 200
    assert client.get("/readyz").get_json()["detail"] == {"upstream_auth": "ok"}


# -- metrics ---------------------------------------------------------------------------


def test_upstream_latency_and_statuses_are_counted(
    client: Any, make_key: Callable[..., IssuedKey], upstream: responses.RequestsMock
) -> None:
    key = make_key()
    fake = FakeBackend(upstream)
    fake.failures = [500, requests.ConnectionError("refused")]
    assert create_video(client, key).status_code == 502
    assert create_video(client, key).status_code == 502
    video = create_video(client, key).get_json()
    assert client.get(f"/v1/videos/{video['id']}", headers=bearer(key.secret)).status_code == 200

    values = samples(scrape(client))

    assert values['drawbridge_upstream_responses_total{status="200"}'] == 2
    assert values['drawbridge_upstream_responses_total{status="500"}'] == 1
    assert values['drawbridge_upstream_responses_total{status="error"}'] == 1
    # Latency only for calls that were answered: a POST failing, a POST and a GET.
    assert values['drawbridge_upstream_request_duration_seconds_count{method="POST"}'] == 2
    assert values['drawbridge_upstream_request_duration_seconds_count{method="GET"}'] == 1
    assert (
        values['drawbridge_upstream_request_duration_seconds_bucket{method="GET",le="+Inf"}'] == 1
    )


def test_quota_refusals_are_counted_by_quota(
    client: Any,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    upstream: responses.RequestsMock,
    store: Store,
) -> None:
    FakeBackend(upstream)
    with store.transaction() as tx:
        tx.policies.set_policy("tight", Policy(generations_per_day=1), "test:setup")
    key = make_key(make_tester(cohort="tight").id)
    assert create_video(client, key).status_code == 200
    assert create_video(client, key).status_code == 429
    assert create_video(client, key).status_code == 429

    values = samples(scrape(client))

    assert values['drawbridge_quota_refusals_total{quota="generations_per_day"}'] == 2
    assert values['drawbridge_rejections_total{code="quota_exceeded"}'] == 2


def test_anomaly_trips_are_counted_by_rule_and_action(
    client: Any, make_key: Callable[..., IssuedKey]
) -> None:
    key = make_key()
    for n in range(1, 22):  # the default policy allows 20 client addresses in 10 minutes
        client.get(
            "/v1/me", headers=bearer(key.secret), environ_base={"REMOTE_ADDR": f"203.0.113.{n}"}
        )

    values = samples(scrape(client))

    assert values['drawbridge_anomaly_trips_total{rule="client_ips",action="suspended"}'] == 1


# -- X-Request-Id ----------------------------------------------------------------------


def test_a_well_formed_request_id_is_kept(
    client: Any, make_key: Callable[..., IssuedKey], upstream: responses.RequestsMock, store: Store
) -> None:
    FakeBackend(upstream)
    key = make_key()
    for incoming in ("trace-42", "lb:7f3a.01_X", "a" * 128):
        response = client.get("/healthz", headers={"X-Request-Id": incoming})
        assert response.headers["X-Request-Id"] == incoming

    created = client.post(
        "/v1/videos",
        json={"prompt": "a kite"},
        headers={**bearer(key.secret), "X-Request-Id": "client-req-1"},
    )
    again = client.post(
        "/v1/videos",
        json={"prompt": "a kite"},
        headers={**bearer(key.secret), "X-Request-Id": "client-req-1"},
    )

    assert created.status_code == again.status_code == 200
    assert created.headers["X-Request-Id"] == again.headers["X-Request-Id"] == "client-req-1"
    # Usage events stay filed under the gateway's own, unique ids (a client may repeat one).
    with store.read() as tx:
        ids = tx.session.scalars(select(UsageEvent.request_id)).all()
    assert len(ids) == len(set(ids)) == 2 and all(i.startswith("req_") for i in ids)
    assert {call.request.headers["X-Request-Id"] for call in upstream.calls} == set(ids)


@pytest.mark.parametrize(
    "incoming",
    [
        "",
        "a" * 129,
        "has space",
        "semi;colon",
        "abc\r\nSet-Cookie: stolen=1",
        "abc\nX-Injected: 1",
        "caf\u00e9",
        "<script>",
    ],
)
def test_a_malformed_request_id_is_replaced(client: Any, incoming: str) -> None:
    environ = {"HTTP_X_REQUEST_ID": incoming}
    response = client.get("/healthz", environ_overrides=environ)

    echoed = response.headers["X-Request-Id"]
    assert echoed != incoming and echoed.startswith("req_") and len(echoed) == 36
    assert "Set-Cookie" not in response.headers and "X-Injected" not in response.headers


# -- packaging -------------------------------------------------------------------------


def _third_party_imports() -> set[str]:
    names = set()
    for path in [*ROOT.joinpath("gateway").rglob("*.py"), *ROOT.joinpath("keys").rglob("*.py")]:
        if "examples" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"gateway", "keys", "__future__"}


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        dependency.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for dependency in project["dependencies"]
    }
    distributions = packages_distributions()
    imported = {
        distributions[name][0].lower()
        for name in _third_party_imports()
        if name not in ("psycopg",)  # reached through the database URL, declared with extras
    }
    assert imported <= declared, imported - declared
    assert {"limits", "urllib3"} <= declared


def test_license_and_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert (
        "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
    )
    assert (
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"
        in (ROOT / "LICENSE").read_text()
    )
    for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"{package}/{pattern} names nothing"
    examples = ROOT / "gateway" / "examples"
    assert {p.name for p in examples.iterdir()} >= {
        "drawbridge.toml",
        "policies.toml",
        "gunicorn.conf.py",
    }


def test_drawbridge_examples_shows_and_copies_the_shipped_files(cli: Cli, tmp_path: Path) -> None:
    assert "drawbridge.toml" in cli("examples").output
    cli("examples", "--copy-to", str(tmp_path))
    assert (tmp_path / "policies.toml").read_text() == (ROOT / "config/policies.toml").read_text()
    # Every file of config/ is shipped and copied: settings, policies, gunicorn, nginx, units.
    shipped = {path.name for path in (ROOT / "config").iterdir()}
    assert shipped <= {path.name for path in tmp_path.iterdir()}
    assert {"drawbridge.service", "drawbridge-nginx.service"} <= shipped


def test_help_does_not_import_the_app() -> None:
    code = (
        "import sys\n"
        "from gateway.cli import main\n"
        "try:\n"
        "    main(['--help'], prog_name='drawbridge')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('flask', 'sqlalchemy', 'gateway.app', 'cryptography',"
        " 'alembic', 'requests') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "HEAVY []" in result.stdout, result.stdout
    assert "serve" in result.stdout and "testers" in result.stdout


def test_help_summaries_match_the_commands() -> None:
    load_commands()
    assert {
        name: command.help.splitlines()[0] if command.help else ""
        for name, command in main.commands.items()
    } == COMMAND_SUMMARIES


def test_each_command_lives_in_the_module_named_after_its_group() -> None:
    load_commands()

    def defined_in(command: Any, path: str) -> Iterator[tuple[str, str]]:
        yield path, command.callback.__module__
        for name, sub in getattr(command, "commands", {}).items():
            yield from defined_in(sub, f"{path} {name}")

    assert sorted(main.commands) == sorted(COMMAND_MODULES)
    for group, command in main.commands.items():
        for path, module in defined_in(command, group):
            assert module == f"gateway.cli.commands.{group}", path


def test_the_plain_gunicorn_config_carries_the_serve_defaults_and_hooks() -> None:
    from gateway import gunicorn_conf
    from gateway.process.server import DEFAULT_OPTIONS

    assert {name: getattr(gunicorn_conf, name) for name in DEFAULT_OPTIONS} == DEFAULT_OPTIONS


def test_a_served_worker_freezes_the_heap_it_starts_with() -> None:
    """``drawbridge serve`` builds the app in each worker and then takes what exists out of
    the collector's full collections (gc.freeze): they walk what requests made only."""
    import gc

    from flask import Flask

    from gateway.process.server import Server

    built = Flask("frozen")
    server = Server(lambda: built, {"bind": "127.0.0.1:0", "workers": 1})
    gc.unfreeze()
    try:
        assert server.load() is built
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
