"""Tests for the simulated Videos API in gateway/simulator/."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pkgutil
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import openai
import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

import gateway.simulator
from gateway.simulator import SimulatorOptions, create_simulator_app
from gateway.simulator.jobs import lifecycle
from tests.helpers import assert_openai_error

KEY = "sk-sim-master-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = Path(__file__).resolve().parents[2]


def make_client(**options: Any) -> FlaskClient:
    """A test client for a simulator with the master key and the given options."""
    return create_simulator_app(SimulatorOptions(api_key=KEY, **options)).test_client()


@pytest.fixture
def client() -> FlaskClient:
    """A simulator whose jobs complete instantly, with small content."""
    return make_client(job_seconds=0, content_bytes=200_000)


def create(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    """Create a video through the API and return its JSON."""
    response = client.post(
        "/v1/videos", json={"prompt": "a cat on a skateboard", **fields}, headers=AUTH
    )
    assert response.status_code == 200, response.json
    assert response.json is not None
    return dict(response.json)


def set_faults(client: FlaskClient, **faults: Any) -> None:
    """Install faults through the control plane."""
    response = client.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.json


# --- the package -------------------------------------------------------------------------------


def test_public_surface() -> None:
    assert gateway.simulator.__all__ == ["SimulatorOptions", "app_from_env", "create_simulator_app"]


# Run in a fresh interpreter: import the modules named as arguments, print every module loaded.
IMPORT_AND_LIST = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("\\n".join(sys.modules))
"""


def test_imports_nothing_from_gateway_or_keys() -> None:
    # The simulator stands in for a third-party backend: it must run without our own code.
    package = gateway.simulator
    modules = [info.name for info in pkgutil.walk_packages(package.__path__, "gateway.simulator.")]
    assert "gateway.simulator.app" in modules
    loaded = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_LIST, "gateway.simulator", *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(modules) <= set(loaded)
    in_simulator = {"gateway.simulator", *modules}
    ours = [
        name
        for name in loaded
        if name == "keys"
        or name.startswith("keys.")
        or (name.startswith("gateway.") and name not in in_simulator)
    ]
    assert ours == []


# --- options -----------------------------------------------------------------------------------


def test_options_from_env() -> None:
    env = {
        "DRAWBRIDGE_SIM_API_KEY": "k",
        "DRAWBRIDGE_SIM_JOB_SECONDS": "0.5",
        "DRAWBRIDGE_SIM_CONTENT_BYTES": "42",
        "DRAWBRIDGE_SIM_POLL_AFTER_MS": "7",
    }
    assert SimulatorOptions.from_env(env) == SimulatorOptions("k", 0.5, 42, 7)
    assert SimulatorOptions.from_env({"DRAWBRIDGE_SIM_API_KEY": ""}) == SimulatorOptions()
    with pytest.raises(ValueError, match="DRAWBRIDGE_SIM_CONTENT_BYTES"):
        SimulatorOptions.from_env({"DRAWBRIDGE_SIM_CONTENT_BYTES": "1.5"})
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="job_seconds"):
            SimulatorOptions(job_seconds=bad)


# --- auth and validation -----------------------------------------------------------------------


def test_auth_is_required_on_v1_only(client: FlaskClient) -> None:
    assert_openai_error(client.get("/v1/videos"), 401, "invalid_api_key")
    wrong = client.get("/v1/videos", headers={"Authorization": "Bearer nope"})
    assert_openai_error(wrong, 401, "invalid_api_key")
    assert wrong.json is not None
    assert wrong.json["error"]["type"] == "invalid_request_error"
    assert client.get("/v1/videos", headers=AUTH).status_code == 200
    assert client.get("/_sim/healthz").json == {"status": "ok"}


def test_no_api_key_means_no_auth() -> None:
    open_client = create_simulator_app(SimulatorOptions(job_seconds=0)).test_client()
    assert open_client.get("/v1/videos").status_code == 200


def test_create_accepts_multipart_with_defaults(client: FlaskClient) -> None:
    response = client.post(
        "/v1/videos",
        data={"prompt": "waves", "input_reference": (io.BytesIO(b"\x89PNG"), "ref.png")},
        content_type="multipart/form-data",
        headers=AUTH,
    )
    assert response.status_code == 200
    video = response.json
    assert video is not None
    assert re.fullmatch(r"video_[0-9a-f]{24}", video["id"])
    assert video["object"] == "video"
    assert (video["model"], video["seconds"], video["size"]) == ("sora-2", "4", "720x1280")
    assert (video["prompt"], video["remixed_from_video_id"], video["error"]) == (
        "waves",
        None,
        None,
    )
    assert isinstance(video["created_at"], int)


def test_create_accepts_json_choices(client: FlaskClient) -> None:
    video = create(client, model="sora-2-pro", seconds=12, size="1792x1024")
    assert (video["model"], video["seconds"], video["size"]) == ("sora-2-pro", "12", "1792x1024")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": "   "}, "prompt", "missing_required_parameter"),
        ({"prompt": ["a"]}, "prompt", "invalid_type"),
        ({"prompt": "p", "model": "sora-3"}, "model", "invalid_value"),
        ({"prompt": "p", "seconds": "5"}, "seconds", "invalid_value"),
        ({"prompt": "p", "size": "640x480"}, "size", "invalid_value"),
    ],
)
def test_create_validation(
    client: FlaskClient, body: dict[str, Any], param: str, code: str
) -> None:
    assert_openai_error(client.post("/v1/videos", json=body, headers=AUTH), 400, code, param)
    # The same rules apply to form bodies, which is what the SDK sends.
    if all(isinstance(value, str) for value in body.values()):
        form = client.post("/v1/videos", data=body, headers=AUTH)
        assert_openai_error(form, 400, code, param)


def test_create_rejects_bodies_that_are_not_objects(client: FlaskClient) -> None:
    assert_openai_error(client.post("/v1/videos", json=["a"], headers=AUTH), 400, "invalid_type")
    malformed = client.post("/v1/videos", data="{", content_type="application/json", headers=AUTH)
    assert_openai_error(malformed, 400, None)


def test_unknown_routes_and_methods_use_the_error_shape(client: FlaskClient) -> None:
    assert_openai_error(client.get("/v1/nope", headers=AUTH), 404, "unknown_url")
    assert_openai_error(client.get("/nope"), 404, "unknown_url")
    put = client.put("/v1/videos", headers=AUTH)
    assert_openai_error(put, 405, "method_not_allowed")
    assert "POST" in put.headers["Allow"]
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/content"), ("POST", "/remix")]:
        missing = client.open(
            f"/v1/videos/video_nope{path}", method=method, headers=AUTH, json={"prompt": "p"}
        )
        assert_openai_error(missing, 404, "not_found")


# --- lifecycle ---------------------------------------------------------------------------------


def test_lifecycle_boundaries() -> None:
    assert lifecycle(0.0, 2.0, fails=False) == ("queued", 0)
    assert lifecycle(0.19, 2.0, fails=False) == ("queued", 0)
    assert lifecycle(0.2, 2.0, fails=False) == ("in_progress", 0)
    assert lifecycle(1.1, 2.0, fails=False) == ("in_progress", 49)
    assert lifecycle(1.99, 2.0, fails=False)[1] == 98
    assert lifecycle(2.0, 2.0, fails=False) == ("completed", 100)
    assert lifecycle(2.0, 2.0, fails=True) == ("failed", 100)
    assert lifecycle(0.0, 0.0, fails=False) == ("completed", 100)


def test_state_progresses_with_time() -> None:
    client = make_client(job_seconds=0.4, poll_after_ms=123)
    video = create(client)
    assert (video["status"], video["progress"], video["completed_at"]) == ("queued", 0, None)

    def retrieve() -> dict[str, Any]:
        response = client.get(f"/v1/videos/{video['id']}", headers=AUTH)
        assert response.headers["openai-poll-after-ms"] == "123"
        assert response.json is not None
        return dict(response.json)

    time.sleep(0.2)
    middle = retrieve()
    assert middle["status"] == "in_progress"
    assert 0 < middle["progress"] < 100
    assert middle["expires_at"] is None
    time.sleep(0.25)
    done = retrieve()
    assert (done["status"], done["progress"]) == ("completed", 100)
    assert done["completed_at"] >= done["created_at"]
    assert done["expires_at"] == done["completed_at"] + 3600


def test_fail_marker_ends_in_failure(client: FlaskClient) -> None:
    video = create(client, prompt="a storm [fail]")
    assert video["status"] == "failed"
    assert video["error"]["code"] == "generation_failed"
    assert video["expires_at"] is None
    content = client.get(f"/v1/videos/{video['id']}/content", headers=AUTH)
    assert_openai_error(content, 400, "video_not_ready")


def test_delete(client: FlaskClient) -> None:
    video_id = create(client)["id"]
    deleted = client.delete(f"/v1/videos/{video_id}", headers=AUTH)
    assert deleted.json == {"id": video_id, "object": "video.deleted", "deleted": True}
    assert_openai_error(client.get(f"/v1/videos/{video_id}", headers=AUTH), 404, "not_found")


def test_remix_needs_a_completed_source() -> None:
    client = make_client(job_seconds=60)
    pending = create(client, size="1280x720")
    remix = client.post(f"/v1/videos/{pending['id']}/remix", json={"prompt": "p"}, headers=AUTH)
    assert_openai_error(remix, 400, "video_not_ready")


def test_remix(client: FlaskClient) -> None:
    source = create(client, model="sora-2-pro", seconds="8", size="1280x720")
    url = f"/v1/videos/{source['id']}/remix"
    assert_openai_error(
        client.post(url, json={}, headers=AUTH), 400, "missing_required_parameter", "prompt"
    )
    remix = client.post(url, json={"prompt": "now at night"}, headers=AUTH).json
    assert remix is not None
    assert remix["id"] != source["id"]
    assert remix["remixed_from_video_id"] == source["id"]
    assert remix["prompt"] == "now at night"
    assert (remix["model"], remix["seconds"], remix["size"]) == ("sora-2-pro", "8", "1280x720")


# --- listing -----------------------------------------------------------------------------------


def test_list_pagination(client: FlaskClient) -> None:
    ids = [create(client, prompt=f"video {n}")["id"] for n in range(5)]

    def page(query: str) -> dict[str, Any]:
        response = client.get(f"/v1/videos?{query}", headers=AUTH)
        assert response.status_code == 200, response.json
        assert response.json is not None
        return dict(response.json)

    everything = page("")
    assert everything["object"] == "list"
    assert [video["id"] for video in everything["data"]] == ids[::-1]
    assert everything["has_more"] is False

    first = page("limit=2")
    assert [video["id"] for video in first["data"]] == [ids[4], ids[3]]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[4], ids[3], True)
    second = page(f"limit=2&after={first['last_id']}")
    assert [video["id"] for video in second["data"]] == [ids[2], ids[1]]
    last = page(f"limit=2&after={second['last_id']}")
    assert ([video["id"] for video in last["data"]], last["has_more"]) == ([ids[0]], False)

    ascending = page(f"order=asc&limit=3&after={ids[0]}")
    assert [video["id"] for video in ascending["data"]] == ids[1:4]
    assert ascending["has_more"] is True
    empty = page(f"after={ids[0]}")
    assert (empty["data"], empty["first_id"], empty["last_id"]) == ([], None, None)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("limit=\u00b2", "limit"),
        ("order=up", "order"),
        ("after=video_nope", "after"),
    ],
)
def test_list_validation(client: FlaskClient, query: str, param: str) -> None:
    assert_openai_error(
        client.get(f"/v1/videos?{query}", headers=AUTH), 400, "invalid_value", param
    )


def test_list_limit_bounds_are_inclusive(client: FlaskClient) -> None:
    for limit in (1, 100):
        assert client.get(f"/v1/videos?limit={limit}", headers=AUTH).status_code == 200


# --- content -----------------------------------------------------------------------------------


def test_content_before_completion_is_refused() -> None:
    client = make_client(job_seconds=60)
    video = create(client)
    content = client.get(f"/v1/videos/{video['id']}/content", headers=AUTH)
    assert_openai_error(content, 400, "video_not_ready")


def test_content_size_type_and_determinism(client: FlaskClient) -> None:
    first, second = create(client)["id"], create(client)["id"]

    def download(video_id: str, variant: str = "") -> TestResponse:
        query = f"?variant={variant}" if variant else ""
        response = client.get(f"/v1/videos/{video_id}/content{query}", headers=AUTH)
        assert response.status_code == 200
        return response

    video = download(first)
    assert (video.mimetype, video.headers["Content-Length"]) == ("video/mp4", "200000")
    assert len(video.data) == 200_000
    assert download(first, "video").data == video.data
    assert download(second).data != video.data
    assert video.data[4:8] == b"ftyp"
    for variant, mimetype, magic in [
        ("thumbnail", "image/webp", b"RIFF"),
        ("spritesheet", "image/jpeg", b"\xff\xd8\xff"),
    ]:
        preview = download(first, variant)
        assert preview.mimetype == mimetype
        assert preview.data.startswith(magic)
        assert preview.headers["Content-Length"] == str(len(preview.data))
    bad = client.get(f"/v1/videos/{first}/content?variant=gif", headers=AUTH)
    assert_openai_error(bad, 400, "invalid_value", "variant")


def test_content_has_a_strong_etag_and_if_none_match_is_answered_304(client: FlaskClient) -> None:
    first, second = create(client)["id"], create(client)["id"]
    url = f"/v1/videos/{first}/content"
    video = client.get(url, headers=AUTH)
    etag = video.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert client.get(url, headers=AUTH).headers["ETag"] == etag  # same bytes, same tag
    assert client.get(f"/v1/videos/{second}/content", headers=AUTH).headers["ETag"] != etag
    thumbnail = client.get(f"{url}?variant=thumbnail", headers=AUTH).headers["ETag"]
    assert thumbnail != etag

    for condition in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        unchanged = client.get(url, headers={**AUTH, "If-None-Match": condition})
        assert (unchanged.status_code, unchanged.data) == (304, b""), condition
        assert unchanged.headers["ETag"] == etag
    changed = client.get(url, headers={**AUTH, "If-None-Match": '"other"'})
    assert changed.status_code == 200 and changed.data == video.data
    # Still the API: no key, no 304.
    refused = client.get(url, headers={"If-None-Match": etag})
    assert refused.status_code == 401


def test_content_is_a_playable_mp4_and_images_decode(client: FlaskClient) -> None:
    video_id = create(client)["id"]
    data = client.get(f"/v1/videos/{video_id}/content", headers=AUTH).data
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
    assert (stream.width, stream.height) == (72, 128)  # 720x1280 (the default) scaled down
    assert len(frames) >= 4
    for variant in ("thumbnail", "spritesheet"):
        image = client.get(f"/v1/videos/{video_id}/content?variant={variant}", headers=AUTH)
        with av.open(io.BytesIO(image.data)) as container:
            assert next(container.decode(video=0)).width in (72, 4 * 72)


def test_a_video_smaller_than_its_container_is_the_whole_container() -> None:
    tiny = make_client(job_seconds=0, content_bytes=42)
    video_id = create(tiny)["id"]
    response = tiny.get(f"/v1/videos/{video_id}/content", headers=AUTH)
    assert int(response.headers["Content-Length"]) == len(response.data) > 42
    with av.open(io.BytesIO(response.data)) as container:
        assert len(list(container.decode(video=0))) >= 4


def test_content_is_streamed_not_buffered() -> None:
    client = make_client(job_seconds=0, content_bytes=1 << 30)
    video = create(client)
    response = client.get(f"/v1/videos/{video['id']}/content", headers=AUTH)
    try:
        assert response.headers["Content-Length"] == str(1 << 30)
        assert response.is_streamed
        chunks = iter(response.response)
        assert all(len(next(chunks)) <= 64 * 1024 for _ in range(8))
    finally:
        response.close()


# --- faults ------------------------------------------------------------------------------------


def test_status_fault_clears_itself_after_count(client: FlaskClient) -> None:
    set_faults(client, status=503, status_count=2)
    for _ in range(2):
        failed = client.get("/v1/videos", headers=AUTH)
        assert_openai_error(failed, 503, "simulated_fault")
        assert failed.json is not None
        assert failed.json["error"]["type"] == "server_error"
    assert client.get("/_sim/healthz").status_code == 200  # the control plane is never faulted
    assert client.get("/v1/videos", headers=AUTH).status_code == 200
    faults = client.get("/_sim/faults").json
    assert faults is not None
    assert (faults["status"], faults["status_count"]) == (None, None)


def test_status_fault_without_count_and_path_prefix(client: FlaskClient) -> None:
    set_faults(client, status=500, path_prefix="/v1/videos/")
    assert client.get("/v1/videos", headers=AUTH).status_code == 200
    for _ in range(3):
        assert_openai_error(client.get("/v1/videos/video_x", headers=AUTH), 500, "simulated_fault")
    assert client.delete("/_sim/faults").status_code == 204
    assert_openai_error(client.get("/v1/videos/video_x", headers=AUTH), 404, "not_found")


def test_latency_fault(client: FlaskClient) -> None:
    set_faults(client, latency_ms=150)
    started = time.monotonic()
    assert client.get("/v1/videos", headers=AUTH).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_redirect_and_lie_faults(client: FlaskClient) -> None:
    set_faults(client, redirect="http://elsewhere.invalid/v1/videos")
    moved = client.get("/v1/videos", headers=AUTH)
    assert (moved.status_code, moved.headers["Location"]) == (
        302,
        "http://elsewhere.invalid/v1/videos",
    )
    set_faults(client, lie=True)
    lie = client.get("/v1/videos", headers=AUTH)
    assert (lie.status_code, lie.mimetype, lie.data) == (200, "text/html", b"<html>oops</html>")


def test_oversize_fault_pads_a_valid_video(client: FlaskClient) -> None:
    video_id = create(client)["id"]
    set_faults(client, oversize_bytes=300_000)
    response = client.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert response.headers["Content-Length"] == "300000"
    assert len(response.data) == 300_000
    body = json.loads(response.data)
    assert (body["id"], body["status"]) == (video_id, "completed")
    assert client.get("/v1/videos", headers=AUTH).content_length < 10_000  # only retrieve grows


def test_hang_fault_is_released_when_faults_change(client: FlaskClient) -> None:
    set_faults(client, hang=True)
    answered = threading.Event()

    def call() -> None:
        client.application.test_client().get("/v1/videos", headers=AUTH)
        answered.set()

    caller = threading.Thread(target=call)
    caller.start()
    assert not answered.wait(0.2)  # still hanging
    client.delete("/_sim/faults")
    assert answered.wait(2)
    caller.join()


def test_fault_validation(client: FlaskClient) -> None:
    cases = [
        ({"nope": 1}, "nope", "unknown_parameter"),
        ({"status": "500"}, "status", "invalid_value"),
        ({"hang": 1}, "hang", "invalid_value"),
        ({"latency_ms": True}, "latency_ms", "invalid_value"),
        ({"status_count": 2}, "status_count", "invalid_value"),
        ({"path_prefix": "v1"}, "path_prefix", "invalid_value"),
    ]
    for body, param, code in cases:
        assert_openai_error(client.post("/_sim/faults", json=body), 400, code, param)
    assert_openai_error(client.post("/_sim/faults", json=[1]), 400, "invalid_type")


def test_reset_fault_raises_in_process(client: FlaskClient) -> None:
    client.application.testing = True  # let the exception reach the test instead of a 500
    set_faults(client, reset=True)
    with pytest.raises(ConnectionResetError):
        client.get("/v1/videos", headers=AUTH)


def test_reset_fault_drops_the_connection_under_werkzeug() -> None:
    app = create_simulator_app(SimulatorOptions(api_key=KEY))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        requests.post(f"{base}/_sim/faults", json={"reset": True}, timeout=5).raise_for_status()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/v1/videos", headers=AUTH, timeout=5)
        requests.delete(f"{base}/_sim/faults", timeout=5).raise_for_status()
        assert requests.get(f"{base}/v1/videos", headers=AUTH, timeout=5).status_code == 200
    finally:
        server.shutdown()
        thread.join(5)


# --- request log -------------------------------------------------------------------------------


def test_request_log_redacts_credentials(client: FlaskClient) -> None:
    tester = "Bearer sk-tester-secret"
    client.get("/v1/videos?limit=3", headers=AUTH)
    client.get("/v1/videos", headers={"Authorization": tester})
    client.get("/v1/videos")
    client.get("/_sim/healthz")  # the control plane is not recorded
    response = client.get("/_sim/requests")
    assert KEY not in response.text
    assert "sk-tester-secret" not in response.text
    entries = response.json
    assert entries is not None
    assert [(entry["method"], entry["path"]) for entry in entries] == [("GET", "/v1/videos")] * 3
    assert entries[0]["query"] == {"limit": "3"}
    assert entries[0]["headers"]["Authorization"] == "master"
    digest = hashlib.sha256(tester.encode()).hexdigest()[:12]
    assert entries[1]["headers"]["Authorization"] == f"other:{digest}"
    assert "Authorization" not in entries[2]["headers"]
    assert client.delete("/_sim/requests").status_code == 204
    assert client.get("/_sim/requests").json == []


def test_request_log_keeps_the_last_200(client: FlaskClient) -> None:
    for n in range(205):
        client.get(f"/v1/videos?n={n}", headers=AUTH)
    entries = client.get("/_sim/requests").json
    assert entries is not None
    assert len(entries) == 200
    assert (entries[0]["query"], entries[-1]["query"]) == ({"n": "5"}, {"n": "204"})


# --- a real process, driven by the official SDK ------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run the simulator under gunicorn and yield its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("simulator") / "gunicorn.log"
    env = {
        **os.environ,
        "DRAWBRIDGE_SIM_API_KEY": KEY,
        "DRAWBRIDGE_SIM_JOB_SECONDS": "0.3",
        "DRAWBRIDGE_SIM_CONTENT_BYTES": str(3 * 64 * 1024 + 1234),
        "DRAWBRIDGE_SIM_POLL_AFTER_MS": "50",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "gateway.simulator:app_from_env()",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "--threads",
        "8",
        "--no-control-socket",  # gunicorn's default socket path is shared by every instance
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /_sim/healthz until it answers, failing early if gunicorn died."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited early:\n{log.read_text()}")
        try:
            if requests.get(f"{base}/_sim/healthz", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail(f"simulator not healthy in time:\n{log.read_text()}")


@pytest.mark.integration
def test_official_sdk_against_gunicorn(live_simulator: str) -> None:
    base = live_simulator
    requests.delete(f"{base}/_sim/requests", timeout=5).raise_for_status()
    with openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0) as sdk:
        video = sdk.videos.create_and_poll(prompt="a lighthouse", seconds="8", size="1280x720")
        assert (video.status, video.progress, video.seconds) == ("completed", 100, "8")
        content = sdk.videos.download_content(video.id).read()
        assert len(content) == 3 * 64 * 1024 + 1234
        thumbnail = sdk.videos.download_content(video.id, variant="thumbnail").read()
        assert thumbnail.startswith(b"RIFF")
        assert video.id in [listed.id for listed in sdk.videos.list(limit=1)]  # auto-paginates

        remix = sdk.videos.remix(video.id, prompt="the lighthouse at dawn")
        assert remix.remixed_from_video_id == video.id
        assert sdk.videos.poll(remix.id).status == "completed"

        assert sdk.videos.delete(video.id).deleted is True
        with pytest.raises(openai.NotFoundError):
            sdk.videos.retrieve(video.id)
    with (
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.videos.list()

    log = requests.get(f"{base}/_sim/requests", timeout=5)
    assert KEY not in log.text
    credentials = {entry["headers"]["Authorization"] for entry in log.json()}
    assert credentials == {"master", "other:" + hashlib.sha256(b"Bearer wrong").hexdigest()[:12]}


@pytest.mark.integration
def test_reset_fault_under_gunicorn(live_simulator: str) -> None:
    base = live_simulator
    requests.post(f"{base}/_sim/faults", json={"reset": True}, timeout=5).raise_for_status()
    try:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/v1/videos", headers=AUTH, timeout=5)
    finally:
        requests.delete(f"{base}/_sim/faults", timeout=5).raise_for_status()
    # The worker survived the dropped connection.
    assert requests.get(f"{base}/v1/videos", headers=AUTH, timeout=5).status_code == 200
