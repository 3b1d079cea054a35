"""``drawbridge demo``: from nothing to a working gateway, used as its banner says, and gone
without a trace when it is stopped."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import openai
import pytest

from keys.provenance.mp4 import without_c2pa
from tests.helpers import free_port
from tests.integration.live import (
    HTTP_TIMEOUT,
    ROOT,
    child_pids,
    clean_env,
    http_session,
    is_alive,
    wait_for,
)

pytestmark = pytest.mark.integration

DEMO_CONTENT_BYTES = 1_048_576  # the simulator's default, which the demo keeps
BANNER = {
    "url": re.compile(r"^\s*gateway URL\s+(?P<url>http://\S+/v1)\s*$"),
    "admin": re.compile(r"^\s*admin token\s+(?P<token>drwbadm_\w+)\s*$"),
    "key": re.compile(
        r"^\s*tester key\s+(?P<secret>drwb_\w+)\s+\((?P<key_id>key_\w+), tester (?P<tester>\w+)\)"
    ),
    "cli": re.compile(r"^\s*(?P<command>DRAWBRIDGE_CONFIG=\S+ \S+ keys list)\s*$"),
    "identify": re.compile(r"^\s*(?P<command>.+ provenance identify \S+kite\.mp4)\s*$"),
}


def read_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_demo_runs_the_whole_product_and_stops_cleanly(tmp_path: Path, stop: str) -> None:
    port, simulator_port = free_port(), free_port()
    folder = tmp_path / "demo"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--dir",
            str(folder),
            "--port",
            str(port),
            "--simulator-port",
            str(simulator_port),
            "--job-seconds",
            "0.5",
        ],
        env=clean_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(demo.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        found: dict[str, re.Match[str]] = {}
        deadline = time.monotonic() + 60
        while len(found) < len(BANNER):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("no banner within 60s:\n" + "".join(output))
            if line is None:
                pytest.fail(
                    f"the demo exited ({demo.wait()}) before its banner:\n{''.join(output)}"
                )
            output.append(line)
            for name, pattern in BANNER.items():
                if match := pattern.match(line):
                    found[name] = match
        url = found["url"]["url"]
        admin_token, secret = found["admin"]["token"], found["key"]["secret"]
        key_id = found["key"]["key_id"]
        assert url == f"http://127.0.0.1:{port}/v1"

        # The tester key works with the unmodified SDK.
        with openai.OpenAI(
            base_url=url,
            api_key=secret,
            max_retries=0,
            timeout=HTTP_TIMEOUT,
            http_client=openai.DefaultHttpxClient(trust_env=False),
        ) as client:
            video = client.videos.create_and_poll(prompt="a paper boat on a canal")
            assert video.status == "completed"
            first = client.videos.download_content(video.id).read()
            assert len(first) > DEMO_CONTENT_BYTES
            # The host's content cache is in the demo's folder, private; a repeat download
            # is served from it (the simulator answers 304), with a manifest of its own.
            cache = folder / "provenance-cache"
            assert stat.S_IMODE(cache.stat().st_mode) == 0o700
            assert len(list(cache.glob("*.mp4"))) == 1
            again = client.videos.download_content(video.id).read()
            assert again != first and without_c2pa(again) == without_c2pa(first)

        # The admin token works on the admin API and shows the key without its secret.
        with http_session() as session:
            response = session.get(
                f"http://127.0.0.1:{port}/admin/v1/keys",
                headers={"Authorization": f"Bearer {admin_token}"},
                timeout=HTTP_TIMEOUT,
            )
        assert response.status_code == 200, response.text
        keys = {key["id"]: key for key in response.json()["data"]}
        assert keys[key_id]["status"] == "active"
        assert keys[key_id]["last_used_at"] is not None
        assert secret not in response.text
        # The example cohorts of config/policies.toml are stored, not just the default.
        with http_session() as session:
            cohorts = session.get(
                f"http://127.0.0.1:{port}/admin/v1/cohorts",
                headers={"Authorization": f"Bearer {admin_token}"},
                timeout=HTTP_TIMEOUT,
            )
        assert cohorts.status_code == 200, cohorts.text
        names = {row["cohort"] for row in cohorts.json()["data"]}
        assert {"default", "artists", "red-team"} <= names

        # The CLI hint runs as printed, from a shell without an activated virtualenv.
        path = os.pathsep.join(
            entry
            for entry in os.environ.get("PATH", "").split(os.pathsep)
            if str(Path(sys.executable).parent) not in entry
        )
        listed = subprocess.run(
            ["/bin/sh", "-c", found["cli"]["command"]],
            env={**clean_env(), "PATH": path},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert key_id in listed.stdout

        # So does the provenance recipe: download a video, identify it as that download.
        traced = subprocess.run(
            ["/bin/sh", "-c", found["identify"]["command"]],
            env={**clean_env(), "PATH": path},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert traced.returncode == 0, traced.stdout + traced.stderr
        assert "verdict: identified" in traced.stdout and "manifest: valid" in traced.stdout
        assert f"key {key_id}" in traced.stdout

        # The demo's processes: the simulator and the gateway (gunicorn masters + workers).
        processes = descendants(demo.pid)
        assert len(child_pids(demo.pid)) == 2, processes
        assert len(processes) >= 4, processes

        if stop == "ctrl-c":
            os.killpg(demo.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        else:
            demo.send_signal(signal.SIGTERM)  # what a supervisor sends to the process it ran
        demo.wait(timeout=45)
        wait_for(
            lambda: not any(is_alive(pid) for pid in processes),
            10,
            "the demo's child processes to exit",
        )
        assert refuses_connections(port), "the gateway still listens"
        assert refuses_connections(simulator_port), "the simulator still listens"
    finally:
        if demo.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)
        # Children in our session that outlived the demo would be a failure: end them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(demo.pid, signal.SIGKILL)
