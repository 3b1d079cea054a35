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

With the host's content cache on (keys/provenance/content_cache.py), a video's bytes that
the backend tagged with a strong ETag are kept on disk as they stream (instead of the spool
c2pa hashes), with their hashes and binding. The next delivery of that video asks the
backend with ``If-None-Match``; on ``304 Not Modified`` it streams the local file and signs
with the stored binding (``_Delivery.cached``): no download, no c2pa hash, and no SHA-256
pass where this process kept the original's hash state. Any other answer is today's path
(a 200 replaces the entry; a 404 or 410 drops it). Counted by outcome
(``drawbridge_provenance_cache_total``: hit, miss, refused).
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

from gateway.upstream.client import UpstreamError, video_path
from keys.errors import NotFound
from keys.models import Approval, Tester, Video
from keys.provenance.bindings import Binding
from keys.provenance.content_cache import CachedVideo, CacheHit, PendingEntry, entry_name
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
CACHE_READ_BYTES = 1024 * 1024
# The backend's headers a cached video is delivered with again (its length is the file's).
CACHED_HEADERS = ("Content-Type", "Last-Modified")
MP4_TYPES = ("video/mp4", "application/mp4")
Opened = tuple[int, dict[str, str], Iterator[bytes]]
Prepared = tuple["DeliveryFacts", datetime, "SigningIdentity | None"]


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


def open_delivery(
    state: GatewayState,
    context: RequestContext,
    upstream_id: str,
    video_id: str,
    recipient: Recipient,
    variant: str,
    on_deadline: Callable[[], None] | None = None,
) -> Opened:
    """Open a backend video's content and deliver it (``deliver``), whoever may see it (the
    caller decided): a tester's own video, a share link's, an approver's preview. A video
    this host has cached is asked for with ``If-None-Match``: a 304 delivers the cached
    bytes, a 404 or 410 drops them. Raises UpstreamError (and NotFound for an invalid id)."""
    path = video_path(upstream_id, "/content")
    cache = state.content_cache
    name = entry_name(upstream_id, variant)
    cacheable = variant == "video" and state.settings.provenance_sign and cache.enabled
    hit = cache.open(name) if cacheable else None
    try:
        opened = state.upstream.open_stream(
            path,
            request_id=context.request_id,
            params={"variant": variant},
            on_deadline=on_deadline,
            if_none_match=hit.video.etag if hit is not None else None,
        )
    except UpstreamError as exc:
        if hit is not None:
            hit.close()
            if exc.backend_status in (404, 410):
                cache.drop(hit)
                cache.observe("refused")
        raise
    if cacheable and hit is None:
        cache.observe("miss")
    return deliver(
        state,
        context,
        video_id,
        recipient,
        variant,
        opened,
        on_deadline,
        cache_as=name if cacheable else None,
        hit=hit,
    )


def deliver(
    state: GatewayState,
    context: RequestContext,
    video_id: str,
    recipient: Recipient,
    variant: str,
    opened: Opened,
    on_deadline: Callable[[], None] | None = None,
    *,
    cache_as: str | None = None,
    hit: CacheHit | None = None,
) -> Opened:
    """The download as the client gets it: the video with its manifest appended, anything
    else as it came. The backend's deadline watchdog keeps running while its bytes stream
    to the client, as for an unsigned download; a body read whole first (no length) keeps
    the rest of the download deadline while it streams (``on_deadline`` cuts the client),
    and so does a cached video (``hit``, when the backend answered 304). A signable MP4
    with a strong ETag and a length is kept in the content cache under ``cache_as``."""
    deadline_at = time.monotonic() + state.settings.upstream_download_deadline
    status, headers, chunks = opened
    if hit is not None:
        if status == 304:
            state.content_cache.observe("hit")
            delivery = _Delivery(state, context, video_id, recipient, (200, hit.video.headers))
            return delivery.cached(hit, deadline_at, on_deadline)
        # The backend sent the video again (changed, or it ignores If-None-Match): today's
        # path, and these bytes, if they can be kept, replace the entry.
        hit.close()
        state.content_cache.drop(hit)
        state.content_cache.observe("refused")
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
        etag = headers.get("ETag", "")
        key = (video_id, int(declared), etag)
        keep_as = cache_as if cache_as is not None and _strong(etag) else None
        return delivery.signed(itertools.chain([first], chunks), int(declared), key, keep_as)
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

    def _manifest(
        self, identity: SigningIdentity, facts: DeliveryFacts, binding: dict[str, Any] | None
    ) -> DeliveryManifest:
        """This delivery's manifest (with ``binding``, the bytes' BMFF hash, when known),
        made with the worker's c2pa context of ``identity``. Raises SigningFailed."""
        return DeliveryManifest(self.state.signers.manifest_signer(identity), facts, binding)

    def unsigned(self, reason: str, chunks: Iterator[bytes]) -> Opened:
        """Out as it came, hashed on the way and filed in the index."""
        facts, at, _ = self._facts(signing=False)
        status, headers = self.answer
        out = {**headers, "X-Drawbridge-Download-Id": self.download_id}
        return status, out, self._unsigned_body(reason, chunks, facts, at)

    def signed(
        self,
        chunks: Iterator[bytes],
        length: int,
        key: tuple[str, int, str],
        keep_as: str | None = None,
    ) -> Opened:
        """The video with its manifest appended. A video this process delivered before, by
        the same length and ETag, is signed with that delivery's BMFF hash (checked against
        the SHA-256 of what streams past); else c2pa hashes a copy after the last byte. With
        ``keep_as``, the bytes are written to the content cache as they pass (that copy is
        the one c2pa hashes) and kept under that name."""
        facts, at, identity = self._facts(signing=True)
        assert identity is not None
        known = self.state.signers.bindings.get(key)
        try:
            manifest = self._manifest(
                identity, facts, known.assertion if known is not None else None
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
        pending = self.state.content_cache.pending(keep_as, length) if keep_as else None
        body = _SignedBody(self, chunks, length, manifest, known, key, pending=pending)
        return status, out, body.run(facts, at, identity)

    def cached(
        self,
        hit: CacheHit,
        deadline_at: float,
        on_deadline: Callable[[], None] | None,
    ) -> Opened:
        """The cached video (the backend confirmed it unchanged) with its manifest appended,
        signed with the stored binding. Its SHA-256 is the stored one: where this process
        kept the original's hash state it is not computed again; else the file is hashed as
        it streams and must match it (or the download is cut and the entry dropped)."""
        video = hit.video
        try:
            facts, at, identity = self._facts(signing=True)
        except BaseException:
            hit.close()
            raise
        assert identity is not None
        chunks = _cached_chunks(hit, deadline_at, on_deadline)
        status, headers = self.answer
        try:
            manifest = self._manifest(identity, facts, video.assertion)
        except SigningFailed as exc:
            log.warning("provenance: could not sign video %s: %s", self.video_id, exc)
            out = {**headers, "Content-Length": str(video.length)}
            out["X-Drawbridge-Download-Id"] = self.download_id
            return status, out, self._unsigned_body("sign_failed", chunks, facts, at)
        out = {**headers, "Content-Length": str(video.length + manifest.size)}
        out["X-Drawbridge-Download-Id"] = self.download_id
        known = Binding(video.original_sha256, video.assertion, video.media_sha256)
        original = self.state.content_cache.digest_of(video.original_sha256)
        body = _SignedBody(
            self, chunks, video.length, manifest, known, None, hit=hit, original=original
        )
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

    def _facts(self, *, signing: bool) -> Prepared:
        """The delivery's audit entry, what its manifest says, and (``signing``) the identity
        that signs it, read in the same transaction rather than one of its own."""
        state, recipient, video_id = self.state, self.recipient, self.video_id
        with state.store.transaction() as tx:
            identity = state.signers.current(tx) if signing else None
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
            return facts, entry.at, identity

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
    """A signed video's body: the backend's chunks as they come (or a cached file's), hashed
    and walked, then the manifest box. The first delivery of some bytes in this process
    also copies them (the content cache's ``pending`` entry, else a temporary file, in
    memory up to ``provenance_spool_memory_bytes``) for c2pa to hash after the last byte;
    a later one signs with the binding it left (``known``). With ``original`` (the SHA-256
    state of bytes known to be the ``known`` ones: a cache hit) nothing is hashed again."""

    def __init__(
        self,
        delivery: _Delivery,
        chunks: Iterator[bytes],
        length: int,
        manifest: DeliveryManifest,
        known: Binding | None,
        key: tuple[str, int, str] | None,
        *,
        pending: PendingEntry | None = None,
        hit: CacheHit | None = None,
        original: hashlib._Hash | None = None,
    ) -> None:
        self.delivery, self.chunks, self.length = delivery, chunks, length
        self.manifest, self.known, self.key = manifest, known, key
        self.pending, self.hit, self.original = pending, hit, original

    def run(self, facts: DeliveryFacts, at: datetime, identity: SigningIdentity) -> Iterator[bytes]:
        delivery, length, manifest = self.delivery, self.length, self.manifest
        bindings = delivery.state.signers.bindings
        cache = delivery.state.content_cache
        copy: IO[bytes] | None = None
        if self.pending is not None:
            copy = self.pending.file
        elif self.known is None:
            copy = _spool(delivery.state)
        digest = _BackgroundDigest() if self.original is None else None
        got = 0
        source = "cached file" if self.hit is not None else "backend"
        # A known binding's bytes have a known media hash: the walk checks, hashes no mdat.
        walk = StreamedMp4(length, hash_media=self.known is None)
        try:
            for chunk in self.chunks:
                got += len(chunk)
                if got > length:
                    raise DeliveryCut(f"the {source} sent more than its {length} bytes")
                if digest is not None:
                    digest.update(chunk)
                walk.feed(chunk)
                if copy is not None:
                    copy.write(chunk)
                yield chunk
            if got != length:
                raise DeliveryCut(f"the {source} sent {got} of its {length} bytes")
            media_sha256 = walk.finish()
            original = digest.result() if digest is not None else self.original
            assert original is not None
            original_sha256 = original.hexdigest()
            if self.known is not None:
                if self.known.original_sha256 != original_sha256:
                    if self.key is not None:
                        bindings.drop(self.key)
                    raise DeliveryCut(f"the {source}'s bytes changed since their binding was made")
                media_sha256 = self.known.media_sha256
            if copy is not None and self.known is None:
                manifest.hash(cast(BinaryIO, copy))
            box = manifest.sign()
            binding = self.known
            if copy is not None and self.known is None and media_sha256 is not None:
                binding = self._remember(copy, original_sha256, media_sha256, box)
            if self.pending is not None and binding is not None and media_sha256 is not None:
                self.pending.commit(self._cached_video(binding, original_sha256, media_sha256))
            if digest is not None and (self.pending is not None or self.hit is not None):
                cache.keep_digest(original)
        except (DeliveryCut, NotAnMp4, SigningFailed) as exc:
            if self.hit is not None:
                cache.drop(self.hit)
            delivery._cut(exc)
            raise DeliveryCut(str(exc)) from None
        except Exception as exc:  # the backend's own failure (cut short, timed out)
            if self.hit is not None:  # or the cached file's (unreadable)
                cache.drop(self.hit)
            delivery._cut(exc)
            raise
        finally:
            if digest is not None:
                digest.close()
            manifest.close()
            _close(self.chunks)
            if self.pending is not None:
                self.pending.discard()
            elif copy is not None:
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
    ) -> Binding | None:
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
            return None
        if self.key is not None:
            self.delivery.state.signers.bindings.put(self.key, binding)
        return binding

    def _cached_video(
        self, binding: Binding, original_sha256: str, media_sha256: str
    ) -> CachedVideo:
        _, headers = self.delivery.answer
        return CachedVideo(
            etag=headers["ETag"],
            length=self.length,
            original_sha256=original_sha256,
            media_sha256=media_sha256,
            assertion=binding.assertion,
            headers={name: headers[name] for name in CACHED_HEADERS if name in headers},
        )


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


def _cached_chunks(
    hit: CacheHit, deadline_at: float, on_deadline: Callable[[], None] | None
) -> Iterator[bytes]:
    """A cached file's bytes, exactly its entry's length (a file cut short on disk cuts the
    download: DeliveryCut), within the download deadline."""
    timer = None
    if on_deadline is not None:
        timer = threading.Timer(max(deadline_at - time.monotonic(), 0.0), _cut, (on_deadline,))
        timer.daemon = True
        timer.start()
    left = hit.video.length
    try:
        while left > 0:
            chunk = hit.file.read(min(CACHE_READ_BYTES, left))
            if not chunk:
                raise DeliveryCut(f"the cached file ends {left} bytes short of its length")
            left -= len(chunk)
            yield chunk
    finally:
        if timer is not None:
            timer.cancel()
        hit.close()


def _strong(etag: str) -> bool:
    """A strong entity tag (RFC 9110 8.8.3): quoted, not ``W/``."""
    return len(etag) >= 2 and etag.startswith('"') and etag.endswith('"')


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
