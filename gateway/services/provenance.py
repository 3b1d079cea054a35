"""Provenance on the way out: each video that leaves the gateway gets its own signed C2PA
manifest naming that delivery, and is filed in the forensic index; and identify, which
answers whose a file is.

A signed video streams as it comes: the backend's bytes go out untouched while they are
hashed (SHA-256, and the MP4 walk with its media hash), and the delivery's manifest, a
C2PA ``uuid`` box whose size is fixed before the first byte, is signed over that hash and
sent last (keys/provenance/manifests.py ``DeliveryManifest``). Memory stays flat and the
client's first byte does not wait for the backend's last (docs/provenance.md). Only a body
without a ``Content-Length`` is read whole first (a temporary file, in memory up to
``provenance_spool_memory_bytes``), since the response's length must be known up front.

Content that cannot be signed (not an MP4, encoded in transit, larger than
``provenance_max_sign_bytes``, or refused by the library) goes out unchanged, with the
reason logged and counted (``drawbridge_provenance_deliveries_total``) and, where the bytes
were read, filed in the index so its hash still finds it. A body that turns out wrong
after its first bytes went out (shorter or longer than its length, not a whole MP4) gets
no manifest: the download is cut (``outcome="cut"``), never signed over bytes we did not get.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import queue
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from keys.errors import NotFound
from keys.models import Approval, Tester, Video
from keys.provenance.bindings import Binding
from keys.provenance.identify import Identification, examine, identify
from keys.provenance.identity import SigningIdentity
from keys.provenance.manifests import (
    ApprovalFacts,
    DeliveryFacts,
    DeliveryManifest,
    SigningFailed,
    binding_of,
)
from keys.provenance.mp4 import NotAnMp4, StreamedMp4, check_mp4

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
    """The download as the client gets it: the video with its manifest appended, anything
    else as it came. The backend's deadline watchdog keeps running while its bytes stream
    to the client, as for an unsigned download; a body read whole first (no length) keeps
    the rest of the download deadline while it streams (``on_deadline`` cuts the client)."""
    deadline_at = time.monotonic() + state.settings.upstream_download_deadline
    status, headers, chunks = opened
    if variant != "video" or not state.settings.provenance_sign:
        return opened
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    declared = headers.get("Content-Length", "")
    limit = state.settings.provenance_max_sign_bytes
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        return _unsigned(state, "content_encoded", video_id, opened)
    if declared.isdigit() and int(declared) > limit:
        return _unsigned(state, "too_large", video_id, opened)
    delivery = _Delivery(state, context, video_id, recipient, (status, headers))
    if content_type not in MP4_TYPES:
        return delivery.unsigned("not_mp4", chunks)
    first, chunks = _peek(chunks, 8)
    if first[4:8] != b"ftyp":
        log.warning("provenance: video %s is not an MP4 (no ftyp box first)", video_id)
        return delivery.unsigned("not_mp4", itertools.chain([first], chunks))
    if declared.isdigit():
        # Once the first byte is out, a body the walk refuses can only be cut (the length
        # sent counts the manifest). What its first chunk already shows wrong (within the
        # length it declares) goes out unsigned, as it came.
        try:
            StreamedMp4(int(declared), hash_media=False).feed(first[: int(declared)])
        except NotAnMp4 as exc:
            log.warning("provenance: video %s is not an MP4 to sign: %s", video_id, exc)
            return delivery.unsigned("not_mp4", itertools.chain([first], chunks))
        key = (video_id, int(declared), headers.get("ETag", ""))
        return delivery.signed(itertools.chain([first], chunks), int(declared), key)
    spool = _spool(state)
    try:
        spool.write(first)
        _, size = _copy(chunks, spool, limit - len(first))
        spool.seek(0)
        if size is None:
            # Longer than allowed: what was read goes, then the rest.
            return _unsigned(state, "too_large", video_id, (status, headers, _rest(spool, chunks)))
    except BaseException:
        spool.close()
        raise
    length = len(first) + size
    try:
        # Read whole: whatever is wrong with it shows before the first byte goes out.
        check_mp4(cast(BinaryIO, spool), length)
    except NotAnMp4 as exc:
        log.warning("provenance: video %s is not an MP4 to sign: %s", video_id, exc)
        spool.seek(0)
        return delivery.unsigned("not_mp4", _stream(spool, deadline_at, on_deadline))
    spool.seek(0)
    key = (video_id, length, headers.get("ETag", ""))
    return delivery.signed(_stream(spool, deadline_at, on_deadline), length, key)


class DeliveryCut(Exception):
    """A signed download whose body went wrong after its first bytes went out: no
    manifest is sent and the connection is cut."""


class _Delivery:
    """One delivery of a video: its audit entry and facts (made before the first byte, so
    the manifest can name the entry), the body as it streams, and its row in the index
    (filed once the last byte of the backend's body went through)."""

    def __init__(
        self,
        state: GatewayState,
        context: RequestContext,
        video_id: str,
        recipient: Recipient,
        answer: tuple[int, dict[str, str]],
    ) -> None:
        self.state, self.context, self.video_id, self.recipient = (
            state,
            context,
            video_id,
            recipient,
        )
        self.answer = answer
        self.download_id = "dl_" + secrets.token_hex(12)

    def unsigned(self, reason: str, chunks: Iterator[bytes]) -> Opened:
        """Out as it came, hashed on the way and filed in the index."""
        facts, at = self._facts(None)
        status, headers = self.answer
        out = {**headers, "X-Drawbridge-Download-Id": self.download_id}
        return status, out, self._unsigned_body(reason, chunks, facts, at)

    def signed(self, chunks: Iterator[bytes], length: int, key: tuple[str, int, str]) -> Opened:
        """The video with its manifest appended. A video this process delivered before, by
        the same length and ETag, is signed with that delivery's BMFF hash (checked against
        the SHA-256 of what streams past); else c2pa hashes a copy after the last byte."""
        identity = self.state.signers.current()
        facts, at = self._facts(identity)
        known = self.state.signers.bindings.get(key)
        try:
            manifest = DeliveryManifest(
                identity.chain_pem,
                identity.private_key_pem,
                facts,
                known.assertion if known is not None else None,
            )
        except SigningFailed as exc:
            log.warning("provenance: could not sign video %s: %s", self.video_id, exc)
            status, headers = self.answer
            out = {**headers, "X-Drawbridge-Download-Id": self.download_id}
            return status, out, self._unsigned_body("sign_failed", chunks, facts, at)
        status, headers = self.answer
        out = {**headers, "Content-Length": str(length + manifest.size)}
        out.pop("ETag", None)  # the bytes are this download's own, not the backend's
        out["X-Drawbridge-Download-Id"] = self.download_id
        body = _SignedBody(self, chunks, length, manifest, known, key)
        return status, out, body.run(facts, at, identity)

    def _cut(self, exc: Exception) -> None:
        log.warning("provenance: download of video %s cut, unsigned: %s", self.video_id, exc)
        self.state.signers.observe("cut")

    def _unsigned_body(
        self, reason: str, chunks: Iterator[bytes], facts: DeliveryFacts, at: datetime
    ) -> Iterator[bytes]:
        digest, got = hashlib.sha256(), 0
        try:
            for chunk in chunks:
                got += len(chunk)
                digest.update(chunk)
                yield chunk
        finally:
            _close(chunks)
        sha256 = digest.hexdigest()
        self._record(facts, at, reason, None, (got, sha256, sha256, None))
        _observe(self.state, reason, self.video_id)

    def _facts(self, identity: SigningIdentity | None) -> tuple[DeliveryFacts, datetime]:
        """The delivery's audit entry, and what its manifest says."""
        state, recipient, video_id = self.state, self.recipient, self.video_id
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
                    "download_id": self.download_id,
                    "route": recipient.route,
                    "share_link_id": recipient.share_link_id,
                    "approval_id": approval.id if approval else None,
                },
            )
            prompt = str(video.snapshot.get("prompt", ""))
            facts = DeliveryFacts(
                download_id=self.download_id,
                downloaded_at=entry.at.isoformat(),
                route=recipient.route,
                generation_id=video.id,
                model=str(video.snapshot.get("model", "")),
                prompt_hmac_sha256=state.signers.prompt_hash(prompt),
                key_id=video.key_id,
                tester_id=video.tester_id,
                cohort=tester.cohort if tester else None,
                downloading_key_id=recipient.downloading_key_id,
                recipient=recipient.recipient,
                audit_seq=entry.seq,
                signer_key_id=identity.key_id if identity else "",
                approval=_approval_facts(approval),
                share_link_id=recipient.share_link_id,
                prompt=prompt if state.settings.provenance_include_prompt else None,
            )
            return facts, entry.at

    def _record(
        self,
        facts: DeliveryFacts,
        at: datetime,
        reason: str | None,
        generation: int | None,
        hashes: tuple[int, str, str, str | None],
    ) -> None:
        delivered_bytes, delivered_sha256, original_sha256, media_sha256 = hashes
        recipient = self.recipient
        with self.state.store.transaction() as tx:
            tx.deliveries.record(
                id=self.download_id,
                at=at,
                request_id=self.context.request_id,
                route=recipient.route,
                video_id=self.video_id,
                tester_id=facts.tester_id,
                key_id=facts.key_id,
                cohort=facts.cohort,
                recipient=recipient.recipient,
                downloading_key_id=recipient.downloading_key_id,
                approval_id=facts.approval.id if facts.approval else None,
                share_link_id=recipient.share_link_id,
                audit_seq=facts.audit_seq,
                signer_generation=generation,
                unsigned_reason=reason,
                delivered_bytes=delivered_bytes,
                delivered_sha256=delivered_sha256,
                original_sha256=original_sha256,
                media_sha256=media_sha256,
            )


class _SignedBody:
    """A signed video's body: the backend's chunks as they come, hashed and walked, then the
    manifest box. The first delivery of some bytes in this process also copies them (a
    temporary file, in memory up to ``provenance_spool_memory_bytes``) for c2pa to hash
    after the last byte; a later one signs with the binding it left (``known``)."""

    def __init__(
        self,
        delivery: _Delivery,
        chunks: Iterator[bytes],
        length: int,
        manifest: DeliveryManifest,
        known: Binding | None,
        key: tuple[str, int, str],
    ) -> None:
        self.delivery, self.chunks, self.length = delivery, chunks, length
        self.manifest, self.known, self.key = manifest, known, key

    def run(self, facts: DeliveryFacts, at: datetime, identity: SigningIdentity) -> Iterator[bytes]:
        delivery, length, manifest = self.delivery, self.length, self.manifest
        bindings = delivery.state.signers.bindings
        copy = _spool(delivery.state) if self.known is None else None
        digest, got = _BackgroundDigest(), 0
        # A known binding's bytes have a known media hash: the walk checks, hashes no mdat.
        walk = StreamedMp4(length, hash_media=self.known is None)
        try:
            for chunk in self.chunks:
                got += len(chunk)
                if got > length:
                    raise DeliveryCut(f"the backend sent more than its {length} bytes")
                digest.update(chunk)
                walk.feed(chunk)
                if copy is not None:
                    copy.write(chunk)
                yield chunk
            if got != length:
                raise DeliveryCut(f"the backend sent {got} of its {length} bytes")
            media_sha256 = walk.finish()
            original = digest.result()
            original_sha256 = original.hexdigest()
            if self.known is not None:
                if self.known.original_sha256 != original_sha256:
                    bindings.drop(self.key)
                    raise DeliveryCut("the backend's bytes changed since their binding was made")
                media_sha256 = self.known.media_sha256
            if copy is not None:
                manifest.hash(cast(BinaryIO, copy))
            box = manifest.sign()
            if copy is not None and media_sha256 is not None:
                self._remember(copy, original_sha256, media_sha256, box)
        except (DeliveryCut, NotAnMp4, SigningFailed) as exc:
            delivery._cut(exc)
            raise DeliveryCut(str(exc)) from None
        except Exception as exc:  # the backend's own failure (cut short, timed out)
            delivery._cut(exc)
            raise
        finally:
            digest.close()
            manifest.close()
            _close(self.chunks)
            if copy is not None:
                copy.close()
        delivered = original.copy()
        delivered.update(box)
        delivery._record(
            facts,
            at,
            None,
            identity.generation,
            (length + len(box), delivered.hexdigest(), original_sha256, media_sha256),
        )
        _observe(delivery.state, None, delivery.video_id)
        yield box

    def _remember(
        self, copy: IO[bytes], original_sha256: str, media_sha256: str, box: bytes
    ) -> None:
        """Keep the binding c2pa computed for the next delivery of these bytes (a failure
        here only means the next one hashes again)."""
        copy.seek(0)
        (ftyp_size,) = struct.unpack(">I", copy.read(4))
        copy.seek(0)
        ftyp = copy.read(ftyp_size)
        try:
            binding = Binding(original_sha256, binding_of(ftyp, box), media_sha256)
        except SigningFailed as exc:
            log.warning("provenance: no binding kept for video %s: %s", self.delivery.video_id, exc)
            return
        self.delivery.state.signers.bindings.put(self.key, binding)


class _BackgroundDigest:
    """SHA-256 of a body on a thread of its own, so the hashing (hashlib lets go of the GIL
    for large chunks) overlaps with the socket writes of the chunks already hashed-to-be
    instead of adding to them. At most ``QUEUED`` chunks wait for it."""

    QUEUED = 8

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self._thread = threading.Thread(target=self._run, name="delivery-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def result(self) -> hashlib._Hash:
        """The digest of everything given (waits for the thread)."""
        self.close()
        return self._digest

    def close(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()


def _peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """The body's first ``size`` bytes (fewer if it is shorter), and the rest."""
    first = b""
    for chunk in chunks:
        first += chunk
        if len(first) >= size:
            break
    return first, chunks


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


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
