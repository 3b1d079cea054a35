"""``drawbridge demo``: the whole product on one machine, from nothing, in seconds.

It keeps its state in one folder (SQLite database, root secret, settings file with the
simulator's credential encrypted), starts the simulator and the gateway as child processes,
and prints what a first user needs: the URL, an admin token and a tester key.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import requests

from gateway.cli import cli_actor
from gateway.cli.commands.examples import examples_dir
from gateway.settings import load_settings, root_secret_of
from gateway.state import build_store
from keys.access.roles import ADMIN
from keys.access.vault import Vault, new_root_secret
from keys.errors import Conflict
from keys.limits.policies import load_policy_file
from keys.migrate import upgrade

DEMO_TESTER_EMAIL = "demo-tester@example.com"


def _private_file(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(content)


def prepare(directory: Path, port: int, simulator_port: int) -> tuple[Path, str]:
    """Create (or reuse) the demo's folder; returns its settings file and the master key."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    root_file = directory / "root_secret"
    if not root_file.exists():
        _private_file(root_file, new_root_secret() + "\n")
    vault = Vault(root_file.read_text())
    master_file = directory / "simulator_api_key.enc"
    if not master_file.exists():
        _private_file(master_file, vault.encrypt("sim-master-" + secrets.token_urlsafe(24)))
    encrypted_master = master_file.read_text().strip()
    config = directory / "drawbridge.toml"
    _private_file(
        config,
        "# Written by `drawbridge demo`; see config/drawbridge.toml for every setting.\n"
        f'root_secret_file = "{root_file.resolve()}"\n\n'
        "[database]\n"
        f'url = "sqlite:///{(directory / "demo.db").resolve()}"\n\n'
        "[upstream]\n"
        f'url = "http://127.0.0.1:{simulator_port}/v1"\n'
        f'api_key_encrypted = "{encrypted_master}"\n',
    )
    return config, vault.decrypt(encrypted_master)


def check_ports_free(port: int, simulator_port: int) -> None:
    """Raises ClickException naming the first port that something already listens on.

    Checked before anything starts: otherwise the demo's own processes fail to bind while
    its readiness probes reach whatever holds the port (an earlier demo), and the banner
    would hand out credentials that belong to nothing."""
    for number, option in ((port, "--port"), (simulator_port, "--simulator-port")):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", number))
            except OSError:
                raise click.ClickException(
                    f"port {number} is taken (another demo or server runs there?); "
                    f"pick another with {option} N"
                ) from None
    if port == simulator_port:
        raise click.ClickException("--port and --simulator-port must differ")


def _shown(path: Path) -> str:
    """A path as a user types it here: relative to the current folder when inside it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def drawbridge_command() -> str:
    """How to run ``drawbridge`` from this shell, without an activated virtualenv."""
    script = Path(sys.executable).parent / "drawbridge"
    if script.is_file():
        return shlex.quote(_shown(script))
    return f"{shlex.quote(_shown(Path(sys.executable)))} -m gateway"


def banner(
    url: str, token: str, secret: str, key_id: str, tester_id: str, config: Path, folder: Path
) -> str:
    """What the demo prints once everything answers: commands that run as printed."""
    cli = drawbridge_command()
    settings = shlex.quote(_shown(config))
    lines = [
        "",
        "Drawbridge is running.",
        "",
        f"  gateway URL   {url}/v1",
        f"  admin token   {token}",
        f"  tester key    {secret}   ({key_id}, tester {tester_id})",
        "",
        "Cohorts default, artists and red-team come from config/policies.toml "
        "(`drawbridge policies show`).",
        "Both secrets are shown once. Try:",
        f"  curl -s {url}/v1/me -H 'Authorization: Bearer {secret}'",
    ]
    python = shlex.quote(_shown(Path(sys.executable)))
    if importlib.util.find_spec("openai") is not None:
        lines.append(
            f"  {python} -c \"import openai; c = openai.OpenAI(base_url='{url}/v1', "
            f"api_key='{secret}'); print(c.videos.create_and_poll(prompt='a red kite'))\""
        )
    video = shlex.quote(_shown(folder / "kite.mp4"))
    recipe = (
        f"{python} -c \"import openai; c = openai.OpenAI(base_url='{url}/v1', api_key='{secret}'); "
        "v = c.videos.create_and_poll(prompt='a red kite'); "
        f'c.videos.download_content(v.id).write_to_file({str(_shown(folder / "kite.mp4"))!r})"'
        if importlib.util.find_spec("openai") is not None
        else f"curl -so {video} {url}/v1/videos/VIDEO_ID/content -H 'Authorization: Bearer "
        f"{secret}'"
    )
    lines += [
        "",
        "Every video leaves with a signed C2PA manifest; download one and trace it back:",
        f"  {recipe} && DRAWBRIDGE_CONFIG={settings} {cli} provenance identify {video}",
        "",
        "The CLI works on the demo's database with its settings file:",
        f"  DRAWBRIDGE_CONFIG={settings} {cli} keys list",
        f"  (or once: export DRAWBRIDGE_CONFIG={settings}; then {cli} testers list, ...)",
        "",
        f"State and logs are in {_shown(folder)}/. Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def _wait_ready(url: str, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"the {name} exited at start; see {log}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"the {name} did not become ready; see {log}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(directory: str, port: int, simulator_port: int, job_seconds: float) -> None:
    folder = Path(directory)
    check_ports_free(port, simulator_port)
    config, master_key = prepare(folder, port, simulator_port)
    settings = load_settings(config, environ={})
    store = build_store(settings, Vault(root_secret_of(settings)))
    upgrade(store.database.engine)
    actor = cli_actor()
    # The example cohorts of config/policies.toml (default, artists, red-team), so the
    # console and the admin API show more than the built-in default.
    example_policies = load_policy_file(examples_dir() / "policies.toml")
    with store.transaction() as tx:
        for cohort, policy in example_policies.cohorts.items():
            tx.policies.set_policy(cohort, policy, actor)
        token = tx.tokens.create("demo admin", ADMIN, actor)
        try:
            tester = tx.testers.add("Demo Tester", DEMO_TESTER_EMAIL, actor)
        except Conflict:
            tester = next(t for t in tx.testers.list() if t.email == DEMO_TESTER_EMAIL)
        issued = tx.keys.issue(tester.id, actor, metadata={"issued_by": "drawbridge demo"})
    store.database.dispose()

    base = [sys.executable, "-m", "gateway"]
    sim_env = {**os.environ, "DRAWBRIDGE_SIM_API_KEY": master_key}
    sim_log, gw_log = folder / "simulator.log", folder / "gateway.log"
    children = []
    # A supervisor's SIGTERM stops the demo like Ctrl-C does, children included.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with sim_log.open("ab") as sim_out:
            children.append(
                subprocess.Popen(
                    [
                        *base,
                        "simulator",
                        "--bind",
                        f"127.0.0.1:{simulator_port}",
                        "--job-seconds",
                        str(job_seconds),
                    ],
                    env=sim_env,
                    stdout=sim_out,
                    stderr=sim_out,
                )
            )
        _wait_ready(
            f"http://127.0.0.1:{simulator_port}/_sim/healthz", children[0], "simulator", sim_log
        )
        gateway_env = {k: v for k, v in os.environ.items() if not k.startswith("DRAWBRIDGE_")}
        with gw_log.open("ab") as gw_out:
            children.append(
                subprocess.Popen(
                    [
                        *base,
                        "--config",
                        str(config),
                        "serve",
                        "--bind",
                        f"127.0.0.1:{port}",
                        "--workers",
                        "1",
                        "--threads",
                        "8",
                    ],
                    env=gateway_env,
                    stdout=gw_out,
                    stderr=gw_out,
                )
            )
        _wait_ready(f"http://127.0.0.1:{port}/readyz", children[1], "gateway", gw_log)
        # Only our own processes may have answered: one that died (or is still retrying a
        # port it could not bind) means a probe reached something else.
        for child, name, log in (
            (children[0], "simulator", sim_log),
            (children[1], "gateway", gw_log),
        ):
            if child.poll() is not None:
                raise click.ClickException(f"the {name} exited at start; see {log}")
        url = f"http://127.0.0.1:{port}"
        click.echo(
            banner(url, token.secret, issued.secret, issued.key.id, tester.id, config, folder)
        )
        sys.stdout.flush()
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        raise click.ClickException("a demo process exited; see the logs in " + str(folder))
    except KeyboardInterrupt:
        click.echo("\nstopping")
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
