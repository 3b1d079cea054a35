"""Identify a video file: does it carry a valid manifest of this deployment, and which
delivery is it — by its manifest, or by its hashes when the manifest is gone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from keys.errors import InvalidInput
from keys.models import Delivery
from keys.provenance.manifests import ManifestReading, read_manifest
from keys.provenance.mp4 import NotAnMp4, check_mp4

if TYPE_CHECKING:
    from keys.store import Transaction

READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Identification:
    """The answer. ``verdict`` is "identified" or "unknown"; ``manifest`` is "valid",
    "invalid" or "absent"; ``matched_by`` says how the deliveries were found: "manifest"
    (the download it names), "delivered_hash" (these exact bytes went out once),
    "original_hash" or "media_hash" (the video's bytes: every delivery of it is listed)."""

    verdict: str
    manifest: str
    matched_by: str | None
    sha256: str
    size: int
    failures: tuple[str, ...] = ()
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    audit_seq: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "provenance.identification",
            "verdict": self.verdict,
            "manifest": self.manifest,
            "matched_by": self.matched_by,
            "sha256": self.sha256,
            "size": self.size,
            "failures": list(self.failures),
            "deliveries": self.deliveries,
            "audit_seq": self.audit_seq,
        }


def delivery_view(row: Delivery) -> dict[str, Any]:
    """Who received a delivery, and through what."""
    return {
        "download_id": row.id,
        "downloaded_at": row.at.isoformat(),
        "route": row.route,
        "video_id": row.video_id,
        "tester_id": row.tester_id,
        "key_id": row.key_id,
        "cohort": row.cohort,
        "recipient": row.recipient,
        "downloading_key_id": row.downloading_key_id,
        "approval_id": row.approval_id,
        "share_link_id": row.share_link_id,
        "audit_seq": row.audit_seq,
        "signed": row.unsigned_reason is None,
        "unsigned_reason": row.unsigned_reason,
    }


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    stream.seek(0)
    while chunk := stream.read(READ_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class Examined:
    """What the file says of itself, read with no transaction open."""

    sha256: str
    size: int
    media_sha256: str
    reading: ManifestReading


def examine(upload: BinaryIO, trust_anchors: list[str]) -> Examined:
    """Hash the MP4 in ``upload`` (seekable) and read its manifest against these roots.

    Raises InvalidInput (code ``invalid_video``) when it is not a whole MP4 file.
    """
    sha256, size = sha256_of(upload)
    try:
        media_sha256 = check_mp4(upload, size)
    except NotAnMp4 as exc:
        raise InvalidInput(f"Not a whole MP4 file: {exc}.", code="invalid_video") from None
    upload.seek(0)
    return Examined(sha256, size, media_sha256, read_manifest(upload, trust_anchors))


def identify(tx: Transaction, examined: Examined, actor: str) -> Identification:
    """Which delivery the examined file is; the lookup is recorded in the audit trail."""
    reading = examined.reading
    matched_by: str | None = None
    rows: list[Delivery] = []
    named = (reading.delivery or {}).get("download_id")
    if isinstance(named, str):
        row = tx.deliveries.get(named)
        if row is not None:
            matched_by, rows = "manifest", [row]
    if not rows:
        how, rows = tx.deliveries.by_hash(examined.sha256, examined.media_sha256)
        matched_by = f"{how}_hash" if how else None
    verdict = "identified" if rows else "unknown"
    entry = tx.audit.append(
        actor,
        "provenance.identify",
        rows[0].id if len(rows) == 1 else ("several" if rows else "unknown"),
        details={
            "sha256": examined.sha256,
            "manifest": reading.state,
            "matched_by": matched_by,
            "download_ids": [row.id for row in rows],
        },
    )
    return Identification(
        verdict=verdict,
        manifest=reading.state,
        matched_by=matched_by,
        sha256=examined.sha256,
        size=examined.size,
        failures=reading.failures,
        deliveries=[delivery_view(row) for row in rows],
        audit_seq=entry.seq,
    )
