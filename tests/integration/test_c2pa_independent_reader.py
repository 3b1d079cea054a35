"""Delivered videos checked by an independent C2PA implementation: @trustnxt/c2pa-ts, which
shares no code with c2pa-rs (what signs them, and what c2pa-python's Reader wraps).

On the live gateway and simulator, a file downloaded with the SDK and one fetched through a
share link are read as an outside auditor would, with nothing but the deployment's roots:
the reader finds the manifest, c2pa-ts's own checks hold (the claim's signature, every
assertion's hash, the BMFF hard binding over the file's bytes), the signer chains to the
deployment's root, and the delivery assertion names the download. Against another root, or
with one byte of the media changed, the same file is invalid. What c2pa-ts 0.9.4 does not do
itself, and how read.mjs fills it, is in docs/provenance.md.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keys.provenance.identity import new_root
from keys.provenance.mp4 import without_c2pa
from tests.integration.independent_reader import (
    assertion_data,
    library_codes,
    read_independently,
    require_reader,
)
from tests.integration.live import LiveGateway, TesterKey
from tests.integration.provenance_flows import TRAINED, made_video, share_link, trust_anchors

pytestmark = pytest.mark.integration

DELIVERY = "org.drawbridge.delivery"
# What c2pa-ts reports when its own checks of signature, assertions and binding held.
LIBRARY_CHECKS = {
    "claimSignature.validated",
    "assertion.hashedURI.match",
    "assertion.bmffHash.match",
}


@pytest.fixture(scope="module")
def node() -> str:
    return require_reader()


def newest_signer(gateway: LiveGateway) -> dict[str, Any]:
    signers = gateway.admin_ok("GET", "/provenance/certificates")["signers"]
    return dict(max(signers, key=lambda signer: signer["generation"]))


def der_sha256(pem: str) -> str:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(pem: str) -> str:
    name = x509.load_pem_x509_certificate(pem.encode()).subject
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def impostor_root(root_pem: str) -> str:
    """A root with the deployment root's name, validity and extensions (its key identifier
    too) but another key: only a verified signature tells it apart."""
    real = x509.load_pem_x509_certificate(root_pem.encode())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
    )
    for extension in real.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def media_byte(data: bytes) -> int:
    """The offset of a byte in the middle of the first ``mdat`` payload, wherever the
    manifest and the other top-level boxes sit."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = len(data) - offset
        assert size >= header, f"a box of {size} bytes at {offset}"
        if kind == b"mdat" and size > header:
            return offset + header + (size - header) // 2
        offset += size
    raise AssertionError("no mdat with media in the file")


def sdk_download(gateway: LiveGateway, key: TesterKey, video_id: str) -> tuple[bytes, str]:
    """The video as the SDK downloads it, and the download id the gateway gave it."""
    response = gateway.openai_client(key.secret).videos.download_content(video_id)
    return response.read(), response.response.headers["x-drawbridge-download-id"]


def assert_valid(report: dict[str, Any]) -> None:
    assert report["manifest_found"] is True, report
    assert (report["valid"], report["failures"]) == (True, []), report
    assert library_codes(report, success=True) >= LIBRARY_CHECKS, report
    assert report["hard_binding"] in ("c2pa.hash.bmff.v2", "c2pa.hash.bmff.v3")


def test_an_sdk_download_validates_in_the_independent_reader_against_the_deployment_root(
    live_gateway: LiveGateway, tester_key: TesterKey, node: str, tmp_path: Path
) -> None:
    video_id = made_video(live_gateway, tester_key)
    data, download_id = sdk_download(live_gateway, tester_key, video_id)
    signer = newest_signer(live_gateway)

    report = read_independently(node, data, trust_anchors(live_gateway), tmp_path)
    assert_valid(report)
    # Signed by the deployment's current signing certificate, chained to its root.
    assert report["signer"]["sha256"] == der_sha256(signer["certificate"])
    assert common_name(signer["certificate"]) in report["signer"]["subject"]
    trust = report["trust"]
    assert trust["anchored"] is True
    assert common_name(signer["root"]) in trust["anchor"]
    assert trust["chain"] == [report["signer"]["subject"], trust["anchor"]]
    assert report["signer"]["issuer"] == trust["anchor"]

    (action,) = assertion_data(report, "c2pa.actions.v2")["actions"]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == TRAINED
    assert action["softwareAgent"]["name"] == "sora-2"
    delivery = assertion_data(report, DELIVERY)
    assert (delivery["download_id"], delivery["generation_id"]) == (download_id, video_id)
    assert (delivery["key_id"], delivery["tester_id"], delivery["downloading_key_id"]) == (
        tester_key.key_id,
        tester_key.tester_id,
        tester_key.key_id,
    )
    assert (delivery["route"], delivery["share_link_id"]) == ("download", None)
    assert delivery["signer_key_id"] == signer["key_id"] == report["signer"]["sha256"][:16]


def test_the_independent_reader_refuses_other_roots_a_changed_media_byte_and_a_stripped_file(
    live_gateway: LiveGateway, tester_key: TesterKey, node: str, tmp_path: Path
) -> None:
    video_id = made_video(live_gateway, tester_key)
    data, _ = sdk_download(live_gateway, tester_key, video_id)
    anchors = trust_anchors(live_gateway)
    root = newest_signer(live_gateway)["root"]

    # Another deployment's root (the same name, another key), and an impostor that copies
    # the root's name and key identifier: the chain reaches neither.
    other_deployment, _ = new_root(datetime.now(UTC), 1)
    for name, roots in (("other", other_deployment), ("impostor", impostor_root(root))):
        report = read_independently(node, data, roots, tmp_path / name)
        assert report["manifest_found"] is True, name
        assert report["valid"] is False, name
        assert report["failures"] == ["signingCredential.untrusted"], (name, report)
        assert report["trust"]["anchored"] is False, name

    # One bit of the media: the signature still holds, the hard binding no longer does.
    changed = bytearray(data)
    changed[media_byte(data)] ^= 0x01
    report = read_independently(node, bytes(changed), anchors, tmp_path / "changed")
    assert report["manifest_found"] is True
    assert report["valid"] is False
    assert "assertion.bmffHash.mismatch" in report["failures"], report
    assert "claimSignature.validated" in library_codes(report, success=True)

    # The manifest removed, the bytes kept: nothing to validate.
    report = read_independently(node, without_c2pa(data), anchors, tmp_path / "stripped")
    assert (report["format"], report["manifest_found"], report["valid"]) == ("bmff", False, False)


def test_a_share_link_download_names_its_share_and_approval_in_the_independent_reader(
    live_gateway: LiveGateway, tester_key: TesterKey, node: str, tmp_path: Path
) -> None:
    video_id = made_video(live_gateway, tester_key)
    link, approval_id = share_link(live_gateway, tester_key, video_id)
    with requests.Session() as stranger:
        stranger.trust_env = False
        shared = stranger.get(link, timeout=30)
    assert shared.status_code == 200, shared.text

    report = read_independently(node, shared.content, trust_anchors(live_gateway), tmp_path)
    assert_valid(report)
    delivery = assertion_data(report, DELIVERY)
    token = link.rsplit("/", 1)[1]
    assert delivery["share_link_id"] == "shl_" + hashlib.sha256(token.encode()).hexdigest()[:16]
    assert delivery["download_id"] == shared.headers["X-Drawbridge-Download-Id"]
    assert (delivery["route"], delivery["downloading_key_id"]) == ("share", None)
    assert (delivery["generation_id"], delivery["key_id"], delivery["tester_id"]) == (
        video_id,
        tester_key.key_id,
        tester_key.tester_id,
    )
    assert (delivery["approval"]["id"], delivery["approval"]["kind"]) == (approval_id, "share")
