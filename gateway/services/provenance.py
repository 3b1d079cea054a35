"""Provenance on the way out: each video that leaves the gateway gets its own signed C2PA
manifest naming that delivery, and is filed in the forensic index; and identify, which
answers whose a file is.

Signing needs the whole file (the manifest's hash covers it, and goes before the media),
so a delivery first reads the backend's file into a temporary file that stays in memory
up to ``provenance_spool_memory_bytes`` and goes to disk past it, then signs it into a
second one and streams that out: memory stays flat whatever the size, and the client's
first byte waits for the backend's last (docs/provenance.md).

Content that cannot be signed (not an MP4, encoded in transit, larger than
``provenance_max_sign_bytes``, or refused by the library) goes out unchanged, with the
reason logged and counted (``drawbridge_provenance_deliveries_total``) and, where the bytes
were read, filed in the index so its hash still finds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from keys.errors import NotFound
from keys.models import Approval, Tester, Video
from keys.provenance.identify import Identification, examine, identify
from keys.provenance.manifests import ApprovalFacts, DeliveryFacts, SigningFailed, sign_mp4
from keys.provenance.mp4 import NotAnMp4, check_mp4

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.state import GatewayState
    from keys.store import Store, Transaction

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
MP4_TYPES = ("video/mp4", "application/mp4")
Opened = tuple[int, dict[str, str], Iterator[bytes]]


@dataclass(frozen=True)
class Recipient:
    """Who a video is delivered to, as its manifest and the index name them."""

    route: str  # "download" (a tester's key), "share" (a public link), "preview" (console)
    recipient: str  # "key:<id>", "share:<link id>", "console:<operator>"
    downloading_key_id: str | None = None
    share_link_id: str | None = None
    approval_id: str | None = None  # the approval that let this delivery out, when known


def share_link_id(token: str) -> str:
    """A share link's id: not the token (that opens the video), a digest of it."""
    return "shl_" + hashlib.sha256(token.encode()).hexdigest()[:16]


def deliver(
    state: GatewayState,
    context: RequestContext,
    video_id: str,
    recipient: Recipient,
    variant: str,
    opened: Opened,
    on_deadline: Callable[[], None] | None = None,
) -> Opened:
    """The download as the client gets it: the video signed, anything else as it came.

    A signed video is read whole before it goes out, so the backend's deadline watchdog has
    ended by then; the rest of the download deadline is kept while it streams to the client
    (``on_deadline`` cuts the client's side, as for an unsigned download)."""
    deadline_at = time.monotonic() + state.settings.upstream_download_deadline
    status, headers, chunks = opened
    if variant != "video" or not state.settings.provenance_sign:
        return opened
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    declared = headers.get("Content-Length", "")
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        return _unsigned(state, "content_encoded", video_id, opened)
    if declared.isdigit() and int(declared) > state.settings.provenance_max_sign_bytes:
        return _unsigned(state, "too_large", video_id, opened)
    original = _spool(state)
    try:
        original_sha256, size = _copy(chunks, original, state.settings.provenance_max_sign_bytes)
        if size is None:
            # Longer than its header said (or than allowed): what was read goes, then the rest.
            original.seek(0)
            return _unsigned(
                state, "too_large", video_id, (status, headers, _rest(original, chunks))
            )
        media_sha256: str | None = None
        reason: str | None = None
        if content_type not in MP4_TYPES:
            reason = "not_mp4"
        else:
            try:
                media_sha256 = check_mp4(cast(BinaryIO, original), size)
            except NotAnMp4 as exc:
                reason = "not_mp4"
                log.warning("provenance: video %s is not a whole MP4 (%s)", video_id, exc)
        return _deliver(
            state,
            context,
            video_id,
            recipient,
            (status, headers),
            original,
            original_sha256,
            media_sha256,
            reason,
            (deadline_at, on_deadline),
        )
    except BaseException:
        original.close()
        raise


def _deliver(
    state: GatewayState,
    context: RequestContext,
    video_id: str,
    recipient: Recipient,
    answer: tuple[int, dict[str, str]],
    original: IO[bytes],
    original_sha256: str,
    media_sha256: str | None,
    reason: str | None,
    deadline: tuple[float, Callable[[], None] | None],
) -> Opened:
    status, headers = answer
    download_id = "dl_" + secrets.token_hex(12)
    identity = state.signers.current() if reason is None else None
    with state.store.transaction() as tx:
        video = tx.session.get(Video, video_id)
        if video is None:
            raise NotFound(f"No video found with id '{video_id}'.")
        tester = tx.session.get(Tester, video.tester_id)
        approval = _approval(tx, video_id, recipient.approval_id)
        entry = tx.audit.append(
            recipient.recipient,
            "video.deliver",
            video_id,
            details={
                "download_id": download_id,
                "route": recipient.route,
                "share_link_id": recipient.share_link_id,
                "approval_id": approval.id if approval else None,
            },
        )
        at = entry.at
        facts = DeliveryFacts(
            download_id=download_id,
            downloaded_at=at.isoformat(),
            route=recipient.route,
            generation_id=video.id,
            model=str(video.snapshot.get("model", "")),
            prompt_hmac_sha256=state.signers.prompt_hash(str(video.snapshot.get("prompt", ""))),
            key_id=video.key_id,
            tester_id=video.tester_id,
            cohort=tester.cohort if tester else None,
            downloading_key_id=recipient.downloading_key_id,
            recipient=recipient.recipient,
            audit_seq=entry.seq,
            signer_key_id=identity.key_id if identity else "",
            approval=_approval_facts(approval),
            share_link_id=recipient.share_link_id,
            prompt=str(video.snapshot.get("prompt", ""))
            if state.settings.provenance_include_prompt
            else None,
        )
    out = original
    if identity is not None:
        signed = _spool(state)
        try:
            original.seek(0)
            sign_mp4(
                identity.chain_pem,
                identity.private_key_pem,
                facts,
                cast(BinaryIO, original),
                cast(BinaryIO, signed),
            )
            out = signed
        except SigningFailed as exc:
            signed.close()
            reason = "sign_failed"
            log.warning("provenance: could not sign video %s: %s", video_id, exc)
    if out is not original:
        original.close()
    delivered_sha256, delivered_bytes = _hash(out)
    with state.store.transaction() as tx:
        tx.deliveries.record(
            id=download_id,
            at=at,
            request_id=context.request_id,
            route=recipient.route,
            video_id=video_id,
            tester_id=facts.tester_id,
            key_id=facts.key_id,
            cohort=facts.cohort,
            recipient=recipient.recipient,
            downloading_key_id=recipient.downloading_key_id,
            approval_id=facts.approval.id if facts.approval else None,
            share_link_id=recipient.share_link_id,
            audit_seq=facts.audit_seq,
            signer_generation=identity.generation if reason is None and identity else None,
            unsigned_reason=reason,
            delivered_bytes=delivered_bytes,
            delivered_sha256=delivered_sha256,
            original_sha256=original_sha256,
            media_sha256=media_sha256,
        )
    _observe(state, reason, video_id)
    out_headers = {**headers, "Content-Length": str(delivered_bytes)}
    if reason is None:
        out_headers.pop("ETag", None)  # the bytes are this download's own, not the backend's
    out_headers["X-Drawbridge-Download-Id"] = download_id
    out.seek(0)
    return status, out_headers, _stream(out, *deadline)


def _approval(tx: Transaction, video_id: str, approval_id: str | None) -> Approval | None:
    """The approval that let this content out: the one named, else the video's approved
    download review, else its approved generation (a held one)."""
    if approval_id is not None:
        return tx.session.get(Approval, approval_id)
    for kind in ("download", "generation"):
        latest = tx.approvals.latest(video_id, kind)
        if latest is not None and latest.status == "approved":
            return latest
    return None


def _approval_facts(approval: Approval | None) -> ApprovalFacts | None:
    if approval is None:
        return None
    return ApprovalFacts(
        id=approval.id,
        kind=approval.kind,
        approver=approval.decided_by,
        decided_at=approval.decided_at.isoformat() if approval.decided_at else None,
    )


def _spool(state: GatewayState) -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(
        max_size=state.settings.provenance_spool_memory_bytes, mode="w+b"
    )


def _copy(chunks: Iterator[bytes], into: IO[bytes], limit: int) -> tuple[str, int | None]:
    """Copy the backend's chunks into the spool, hashing: (SHA-256, size), or (…, None)
    when the body passed ``limit`` (the rest is left in ``chunks``)."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        into.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        if size > limit:
            return digest.hexdigest(), None
    return digest.hexdigest(), size


def _hash(spool: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    spool.seek(0)
    while chunk := spool.read(READ_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _stream(
    spool: IO[bytes],
    deadline_at: float | None = None,
    on_deadline: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    timer = None
    if deadline_at is not None and on_deadline is not None:
        timer = threading.Timer(max(deadline_at - time.monotonic(), 0.0), _cut, (on_deadline,))
        timer.daemon = True  # a pending timer must never keep a stopping worker alive
        timer.start()
    try:
        while chunk := spool.read(READ_BYTES):
            yield chunk
    finally:
        if timer is not None:
            timer.cancel()
        spool.close()


def _cut(on_deadline: Callable[[], None]) -> None:
    """A client still reading a signed video at the download deadline: its side is cut, and
    the write blocked on it ends."""
    log.warning("content download cut: it was still running at its deadline")
    with contextlib.suppress(OSError):
        on_deadline()


def _rest(spool: IO[bytes], chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield from _stream(spool)
    yield from chunks


def _unsigned(state: GatewayState, reason: str, video_id: str, opened: Opened) -> Opened:
    log.warning("provenance: video %s goes out unsigned: %s", video_id, reason)
    state.signers.observe(reason)
    return opened


def _observe(state: GatewayState, reason: str | None, video_id: str) -> None:
    if reason is not None:
        log.warning("provenance: video %s goes out unsigned: %s", video_id, reason)
    state.signers.observe(reason or "signed")


def identify_file(store: Store, upload: BinaryIO, actor: str) -> Identification:
    """Whose this file is (keys.provenance.identify), the lookup audited under ``actor``.
    The file is read with no transaction open; only the lookup and its audit entry are.

    Raises InvalidInput (code ``invalid_video``) for a file that is not a whole MP4.
    """
    with store.read() as tx:
        anchors = tx.provenance_signers.trust_anchors()
    examined = examine(upload, anchors)
    with store.transaction() as tx:
        return identify(tx, examined, actor)


def certificates(store: Store) -> dict[str, Any]:
    """The deployment's signing certificates and roots, for outside validators."""
    with store.read() as tx:
        rows = tx.provenance_signers.all()
        roots = tx.provenance_signers.trust_anchors()
    return {
        "object": "provenance.certificates",
        "signers": [
            {
                "generation": row.generation,
                "key_id": row.key_id,
                "created_at": row.created_at.isoformat(),
                "certificate": row.cert_pem,
                "root": row.root_cert_pem,
            }
            for row in rows
        ],
        "trust_anchors": roots,
    }
