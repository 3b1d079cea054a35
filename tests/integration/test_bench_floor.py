"""The parts of bench.flood's floor (``--floor``): nginx answering a flood itself, and a
load paced by a delay per connection (wrk's ``delay()``, and the Python client's sleep).

Against a stand-in gateway that counts what reaches it: the floor is only a floor if the
flood never gets there, and a paced load only paced if no connection sends faster than its
delay allows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bench.harness import FRONT_REFUSES_PATH, HOST, nginx_binary, start_front_proxy
from bench.load import run_python_load, run_wrk, wrk_available
from tests.helpers import service_unavailable

pytestmark = pytest.mark.integration


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_GET(self) -> None:  # http.server calls it by this name
        self.seen.append(self.path)
        body = b'{"status":"ok"}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Counting,), {"seen": seen})
    server = ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_the_front_answers_the_floor_path_itself_and_passes_the_rest_on(
    stand_in: tuple[int, list[str]],
) -> None:
    if nginx_binary() is None:
        service_unavailable("nginx", "not installed; `make system-packages` installs it")
    port, seen = stand_in
    proxy = start_front_proxy(port, front_refuses=True)
    try:
        base = f"http://{HOST}:{proxy.port}"
        before = len(seen)
        refused = [requests.get(base + FRONT_REFUSES_PATH, timeout=10) for _ in range(5)]
        assert {answer.status_code for answer in refused} == {429}
        assert refused[0].json()["error"]["message"] == "refused by the front"
        assert seen[before:] == []
        assert requests.get(base + "/v1/models", timeout=10).status_code == 200
        assert seen[-1] == "/v1/models"
    finally:
        proxy.stop()


def test_the_shipped_front_has_no_floor_path(stand_in: tuple[int, list[str]]) -> None:
    if nginx_binary() is None:
        service_unavailable("nginx", "not installed; `make system-packages` installs it")
    port, seen = stand_in
    proxy = start_front_proxy(port)
    try:
        answer = requests.get(f"http://{HOST}:{proxy.port}{FRONT_REFUSES_PATH}", timeout=10)
        assert answer.status_code == 200
        assert seen[-1] == FRONT_REFUSES_PATH
    finally:
        proxy.stop()


def test_the_python_client_paces_each_connection(stand_in: tuple[int, list[str]]) -> None:
    port, seen = stand_in
    result = run_python_load(HOST, port, "/paced", [{}], duration=1.0, connections=2, delay_ms=200)
    # Each connection sends at most one request per 200 ms of the second, and one more at
    # its start: never more than 2 x 6, however fast the answers come.
    assert 2 <= result["requests"] <= 12
    assert seen.count("/paced") == result["requests"]


def test_wrk_paces_each_connection(stand_in: tuple[int, list[str]]) -> None:
    if not wrk_available():
        pytest.skip("wrk is not installed (`make bench-tools`); the Python client is tested")
    port, seen = stand_in
    result = run_wrk(
        f"http://{HOST}:{port}", "/paced", [{}], duration=1, connections=2, threads=1, delay_ms=200
    )
    assert 2 <= seen.count("/paced") <= 12
    assert result["statuses"].get(200, 0) <= seen.count("/paced")
