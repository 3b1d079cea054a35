"""Provenance on the live gateway and simulator: every video that leaves carries its own
signed C2PA manifest, which c2pa-python's Reader validates against the deployment's root, and
identify traces a file back to its download. (c2pa-python wraps the same Rust core that signs;
test_c2pa_independent_reader.py reads the same downloads with an implementation of its own.)"""

from __future__ import annotations

import http.client
import io
import json
import struct
from pathlib import Path
from typing import Any

import c2pa
import pytest
import requests

from keys.provenance.mp4 import without_c2pa
from tests.integration.independent_reader import (
    assertion_data,
    read_independently,
    require_reader,
)
from tests.integration.live import LiveGateway, TesterKey, wait_for
from tests.integration.provenance_flows import (
    PROMPT,
    TRAINED,
    made_video,
    share_link,
    trust_anchors,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def auditor(live_gateway: LiveGateway) -> str:
    token = live_gateway.cli(
        "tokens", "create", "--name", "prov auditor", "--role", "auditor", "--json"
    )
    live_gateway.issued_secrets.append(token["secret"])
    return str(token["secret"])


def independent_read(data: bytes, anchors: str) -> tuple[str | None, dict[str, Any]]:
    """c2pa-python's Reader, configured only with the deployment's root."""
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": anchors}})
    with c2pa.Reader("video/mp4", io.BytesIO(data), context=context) as reader:
        return reader.get_validation_state(), reader.get_active_manifest() or {}


def assertion(manifest: dict[str, Any], label: str) -> dict[str, Any]:
    for item in manifest["assertions"]:
        if item["label"] == label:
            return dict(item["data"])
    raise AssertionError(f"no {label} in {[a['label'] for a in manifest['assertions']]}")


def identify(gateway: LiveGateway, token: str, data: bytes, **headers: str) -> requests.Response:
    return gateway.admin(
        "POST",
        "/provenance/identify",
        token=token,
        data=data,
        headers={"Content-Type": "video/mp4", **headers},
    )


def error_code(response: requests.Response, status: int) -> str:
    """The response is the gateway's one error shape with this status; its code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return str(body["error"]["code"])


def test_an_sdk_download_carries_a_manifest_the_independent_reader_validates(
    live_gateway: LiveGateway, tester_key: TesterKey, auditor: str
) -> None:
    video_id = made_video(live_gateway, tester_key)
    client = live_gateway.openai_client(tester_key.secret)
    response = client.videos.download_content(video_id)
    data = response.read()
    download_id = response.response.headers["x-drawbridge-download-id"]

    state, manifest = independent_read(data, trust_anchors(live_gateway))
    assert state == "Trusted"
    actions = assertion(manifest, "c2pa.actions.v2")["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED
    assert actions[0]["softwareAgent"]["name"] == "sora-2"
    delivery = assertion(manifest, "org.drawbridge.delivery")
    assert delivery["download_id"] == download_id
    assert delivery["generation_id"] == video_id
    assert (delivery["key_id"], delivery["tester_id"]) == (tester_key.key_id, tester_key.tester_id)
    assert delivery["downloading_key_id"] == tester_key.key_id
    assert delivery["cohort"] == "default" and delivery["route"] == "download"
    assert len(delivery["prompt_hmac_sha256"]) == 64 and "prompt" not in delivery
    # The audit seq in the manifest is this download's entry in the trail.
    entries = live_gateway.admin_ok(
        "GET", "/audit", params={"after_seq": delivery["audit_seq"] - 1, "limit": 1}
    )
    entry = entries["data"][0]
    assert (entry["seq"], entry["action"], entry["target"]) == (
        delivery["audit_seq"],
        "video.deliver",
        video_id,
    )
    assert entry["details"]["download_id"] == download_id
    # No secret and no prompt anywhere in the file.
    for secret in (tester_key.secret, live_gateway.admin_token, auditor, PROMPT):
        assert secret.encode() not in data

    found = identify(live_gateway, auditor, data)
    assert found.status_code == 200, found.text
    view = found.json()
    assert (view["verdict"], view["manifest"], view["matched_by"]) == (
        "identified",
        "valid",
        "manifest",
    )
    (who,) = view["deliveries"]
    assert (who["download_id"], who["key_id"], who["tester_id"]) == (
        download_id,
        tester_key.key_id,
        tester_key.tester_id,
    )
    looked_up = live_gateway.admin_ok(
        "GET", "/audit", params={"after_seq": view["audit_seq"] - 1, "limit": 1}
    )
    assert looked_up["data"][0]["action"] == "provenance.identify"


def test_a_share_link_download_names_the_share_and_its_approval_and_differs_from_the_owners(
    live_gateway: LiveGateway, tester_key: TesterKey, auditor: str
) -> None:
    video_id = made_video(live_gateway, tester_key)
    link, approval_id = share_link(live_gateway, tester_key, video_id)
    owner_copy = (
        live_gateway.openai_client(tester_key.secret).videos.download_content(video_id).read()
    )
    with requests.Session() as stranger:
        stranger.trust_env = False
        shared = stranger.get(link, timeout=30)
    assert shared.status_code == 200
    anchors = trust_anchors(live_gateway)

    state, manifest = independent_read(shared.content, anchors)
    assert state == "Trusted"
    delivery = assertion(manifest, "org.drawbridge.delivery")
    assert delivery["route"] == "share" and delivery["downloading_key_id"] is None
    assert delivery["share_link_id"].startswith("shl_")
    assert delivery["approval"]["id"] == approval_id
    assert delivery["approval"]["kind"] == "share"
    assert delivery["approval"]["approver"].startswith("admin:")
    assert delivery["approval"]["decided_at"]
    token = link.rsplit("/", 1)[1]
    assert token.encode() not in shared.content

    _, owner_manifest = independent_read(owner_copy, anchors)
    owner = assertion(owner_manifest, "org.drawbridge.delivery")
    assert owner_copy != shared.content
    assert owner["download_id"] != delivery["download_id"]
    assert owner["audit_seq"] != delivery["audit_seq"]
    named = {
        identify(live_gateway, auditor, data).json()["deliveries"][0]["download_id"]
        for data in (owner_copy, shared.content)
    }
    assert named == {owner["download_id"], delivery["download_id"]}


def test_tampered_stripped_and_never_delivered_files(
    live_gateway: LiveGateway, tester_key: TesterKey, auditor: str
) -> None:
    video_id = made_video(live_gateway, tester_key)
    client = live_gateway.openai_client(tester_key.secret)
    response = client.videos.download_content(video_id)
    data = response.read()
    download_id = response.response.headers["x-drawbridge-download-id"]

    changed = bytearray(data)
    changed[len(data) // 2] ^= 0x01  # one bit of the media (the manifest is the last box)
    tampered = identify(live_gateway, auditor, bytes(changed)).json()
    assert tampered["manifest"] == "invalid" and tampered["failures"]
    state, _ = independent_read(bytes(changed), trust_anchors(live_gateway))
    assert state == "Invalid"

    # The manifest box follows the backend's bytes: cut out, what is left is those bytes.
    stripped = identify(live_gateway, auditor, without_c2pa(data)).json()
    assert (stripped["verdict"], stripped["manifest"], stripped["matched_by"]) == (
        "identified",
        "absent",
        "original_hash",
    )
    assert download_id in [d["download_id"] for d in stripped["deliveries"]]

    # A video made through the gateway but fetched from the backend directly: never delivered.
    # (Not held, so the gateway's id is the backend's.)
    raw = upstream_content(live_gateway, made_video(live_gateway, tester_key))
    unknown = identify(live_gateway, auditor, raw).json()
    assert (unknown["verdict"], unknown["manifest"], unknown["deliveries"]) == (
        "unknown",
        "absent",
        [],
    )


def upstream_content(gateway: LiveGateway, upstream_id: str) -> bytes:
    env = gateway.env
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(
            f"{env['DRAWBRIDGE_UPSTREAM_URL']}/videos/{upstream_id}/content",
            headers={"Authorization": f"Bearer {env['DRAWBRIDGE_UPSTREAM_API_KEY']}"},
            timeout=30,
        )
    assert response.status_code == 200
    return response.content


def nested_boxes(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = struct.pack(">I4s", 8 + len(inner), b"trak") + inner
    moov = struct.pack(">I4s", 8 + len(inner), b"moov") + inner
    return struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00" + moov


def zip_bomb_like() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.bin", b"\x00" * 5_000_000)
    return buffer.getvalue()


def test_hostile_uploads_are_refused_in_the_error_shape(
    live_gateway: LiveGateway, tester_key: TesterKey, auditor: str
) -> None:
    video_id = made_video(live_gateway, tester_key)
    data = live_gateway.openai_client(tester_key.secret).videos.download_content(video_id).read()
    for body in (
        b"just some text, not a video",
        data[: len(data) // 2],  # truncated
        nested_boxes(5000),
        zip_bomb_like(),
        b"",
    ):
        code = error_code(identify(live_gateway, auditor, body), 400)
        assert code in ("invalid_video", "missing_file")

    # Larger than provenance_identify_max_bytes (256 MiB): refused on its Content-Length,
    # before a byte of it is read (the client sends the headers and 1 KiB, then reads).
    host, port = live_gateway.base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/admin/v1/provenance/identify")
        connection.putheader("Authorization", f"Bearer {auditor}")
        connection.putheader("Content-Type", "video/mp4")
        connection.putheader("Content-Length", str(300 * 1024 * 1024))
        connection.endheaders(b"\x00" * 1024)
        huge = connection.getresponse()
        body = json.loads(huge.read())
    finally:
        connection.close()
    assert huge.status == 413 and body["error"]["code"] == "request_too_large"

    # Roles: auditors and admins only.
    approver = live_gateway.cli(
        "tokens", "create", "--name", "prov approver", "--role", "approver", "--json"
    )
    live_gateway.issued_secrets.append(approver["secret"])
    assert error_code(identify(live_gateway, approver["secret"], data), 403)
    assert identify(live_gateway, live_gateway.admin_token, data).status_code == 200


def test_the_cli_identifies_locally_and_through_the_server(
    live_gateway: LiveGateway, tester_key: TesterKey, auditor: str, tmp_path: Path
) -> None:
    video_id = made_video(live_gateway, tester_key)
    response = live_gateway.openai_client(tester_key.secret).videos.download_content(video_id)
    path = tmp_path / "leaked.mp4"
    path.write_bytes(response.read())
    download_id = response.response.headers["x-drawbridge-download-id"]

    local = live_gateway.cli("provenance", "identify", str(path), "--json")
    remote = live_gateway.cli(
        "--server",
        live_gateway.base,
        "--token",
        auditor,
        "provenance",
        "identify",
        str(path),
        "--json",
    )
    for found in (local, remote):
        assert (found["verdict"], found["manifest"]) == ("identified", "valid")
        assert found["deliveries"][0]["download_id"] == download_id
    text = live_gateway.cli("provenance", "identify", str(path))
    assert f"download {download_id}" in text and "manifest: valid" in text
    assert json.dumps(local).count(tester_key.secret) == 0


def cache_hits(gateway: LiveGateway) -> int:
    """The gateway's count of deliveries served from its content cache (all workers)."""
    with requests.Session() as session:
        session.trust_env = False
        text = session.get(f"{gateway.base}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith('drawbridge_provenance_cache_total{outcome="hit"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def test_a_repeat_download_is_a_cache_hit_and_both_readers_validate_it(
    live_gateway: LiveGateway, tester_key: TesterKey, tmp_path: Path
) -> None:
    """Under gunicorn with the simulator (which answers If-None-Match with 304): the second
    download of a video comes from the host's content cache, signed for its own delivery,
    and is as valid as the first to c2pa-python and to c2pa-ts."""
    node = require_reader()
    video_id = made_video(live_gateway, tester_key)
    client = live_gateway.openai_client(tester_key.secret)
    hits = cache_hits(live_gateway)
    first = client.videos.download_content(video_id)
    first_data = first.read()
    second = client.videos.download_content(video_id)
    second_data = second.read()

    # Counted by whichever worker served it; the others publish theirs within a second.
    wait_for(lambda: cache_hits(live_gateway) >= hits + 1, 10, "the cache hit to be counted")
    anchors = trust_anchors(live_gateway)
    ids = []
    for response, data in ((first, first_data), (second, second_data)):
        state, manifest = independent_read(data, anchors)
        assert state == "Trusted"
        delivery = assertion(manifest, "org.drawbridge.delivery")
        assert delivery["download_id"] == response.response.headers["x-drawbridge-download-id"]
        ids.append(delivery["download_id"])
        report = read_independently(node, data, anchors, tmp_path / delivery["download_id"])
        assert (report["manifest_found"], report["valid"], report["failures"]) == (
            True,
            True,
            [],
        ), report
        assert assertion_data(report, "org.drawbridge.delivery")["download_id"] == ids[-1]
    assert ids[0] != ids[1]
    original = without_c2pa(first_data)
    assert without_c2pa(second_data) == original
    assert first_data[: len(original)] == second_data[: len(original)] == original
    assert first_data != second_data
