"""Leaked keys: finding them in bytes, files and streams, and shutting them off in bulk.

Two halves that meet at the secret:

* the scanner (``scan_bytes``, ``scan_stream``, ``scan_file``, ``scan_path``) is pure: it
  looks for the literal prefix with a compiled bytes regex and keeps only candidates whose
  CRC32 checksum verifies, so random text gives no false positives (one candidate in 56
  billion passes by chance). It never touches the database.
* ``LeakService`` looks found or reported secrets up by digest and revokes the live ones,
  recording where each leak was seen in the key's ``revoked_reason`` and in the audit trail.
  Each outcome says whether the key was proof-bound (docs/proof-of-possession.md): then the
  leaked string alone could not have been used. Such a key is revoked too, unless the
  caller says to keep bound keys (setting ``proof_revoke_leaked = false``).
  The gateway's secret-scanning endpoint and ``drawbridge leaks scan --revoke`` both call
  ``LeakService.report``.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys.access.digests import SecretDigester
from keys.access.keyformat import BASE62, BODY_LENGTH, RANDOM_LENGTH, KeyFormat
from keys.access.lifecycle import effective_status
from keys.errors import InvalidInput
from keys.models import ApiKey, ProofKey, Tester
from keys.records.audit import AuditTrail
from keys.text import clean_text

# Big enough that per-chunk Python overhead vanishes, small enough for a smooth progress bar.
CHUNK_SIZE = 16 * 1024 * 1024
# Bound the IN (...) lists sent to the database.
_LOOKUP_BATCH = 500
_MAX_URL_IN_REASON = 1000
_MAX_SOURCE_IN_REASON = 300
_MAX_REASON = 2000
_NEWLINE = b"\n"
_BASE62_BYTES = BASE62.encode("ascii")

Progress = Callable[[int], None]
Buffer = bytes | bytearray | mmap.mmap


# -- the scanner -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A key-shaped secret with a valid checksum, and where it was found.

    ``line`` and ``column`` are 1-based; the column counts bytes, like ripgrep's.
    """

    origin: str
    offset: int
    line: int
    column: int
    secret: str = field(repr=False)

    @property
    def location(self) -> str:
        return f"{self.origin}:{self.line}:{self.column}"


# Letters from the most to the least frequent in English text and code. Digits count as
# frequent: logs are full of them.
_LETTERS_BY_FREQUENCY = "0123456789etaoinsrhldcumfpgwybvkxjqz"


@dataclass(frozen=True)
class _Candidates:
    """How to find candidates of one key family.

    ``re`` finds a literal prefix by stopping at every occurrence of its first character,
    so the regex searches for the prefix from its rarest letter on (``b_`` of ``drwb_``:
    in English text and hex 'd' is three times as frequent as 'b', and the scan is close to
    twice as fast), and the letters before it (``head``) are compared by hand.
    """

    pattern: re.Pattern[bytes]
    head: bytes


@lru_cache(maxsize=8)
def _candidates_of(prefix: str) -> _Candidates:
    def rarity(index: int) -> tuple[int, int]:
        letter = prefix[index]
        rank = _LETTERS_BY_FREQUENCY.find(letter)
        return (len(_LETTERS_BY_FREQUENCY) if rank < 0 else rank, index)

    anchor = max(range(len(prefix)), key=rarity)
    # No word boundaries: a key glued to other text (``\ndrwb_...`` in a JSON string,
    # ``%3Ddrwb_...`` in an encoded URL) is still a leak; the checksum keeps text out.
    body = rb"_[0-9A-Za-z]{%d}" % BODY_LENGTH
    return _Candidates(
        re.compile(re.escape(prefix[anchor:].encode("ascii")) + body),
        prefix[:anchor].encode("ascii"),
    )


def key_length(key_format: KeyFormat) -> int:
    """Length of a whole secret of this family."""
    return len(key_format.prefix) + 1 + BODY_LENGTH


class _Lines:
    """Line and column of offsets met in increasing order, counting newlines only as far as
    the last finding (a file with no findings costs nothing here)."""

    def __init__(self) -> None:
        self._pos = 0  # absolute offset counted up to
        self._line = 1
        self._line_start = 0  # absolute offset of the current line's first byte

    def advance(self, buffer: Buffer, base: int, to: int) -> None:
        """Count the newlines of ``buffer`` (which starts at absolute ``base``) up to ``to``."""
        start, end = self._pos - base, to - base
        if end <= start:
            return
        if isinstance(buffer, mmap.mmap):  # mmap has no count(); a slice is a bytes copy
            segment: bytes | bytearray = buffer[start:end]
            newlines, last = segment.count(_NEWLINE), segment.rfind(_NEWLINE)
            last = start + last if last >= 0 else -1
        else:
            newlines = buffer.count(_NEWLINE, start, end)
            last = buffer.rfind(_NEWLINE, start, end)
        if newlines:
            self._line += newlines
            self._line_start = base + last + 1
        self._pos = to

    def locate(self, buffer: Buffer, base: int, offset: int) -> tuple[int, int]:
        self.advance(buffer, base, offset)
        return self._line, offset - self._line_start + 1


def _candidates(
    key_format: KeyFormat, buffer: Buffer, start: int, stop: int, limit: int
) -> Iterator[tuple[int, str]]:
    """(offset, secret) of valid keys starting in ``buffer[start:stop]``, searched up to
    ``limit`` (which lets a key that starts before ``stop`` end after it)."""
    found = _candidates_of(key_format.prefix)
    head, head_length = found.head, len(found.head)
    random_at = len(key_format.prefix) + 1 - head_length  # within the match
    checksum_at = random_at + RANDOM_LENGTH
    for match in found.pattern.finditer(buffer, start + head_length, limit):
        offset = match.start() - head_length
        if offset >= stop:
            break
        if head_length and buffer[offset : match.start()] != head:
            continue
        tail = match.group()
        # Cheap first: the checksum's last digit is CRC32 mod 62, which turns away 61 in 62
        # random candidates before any string is built.
        if tail[-1] != _BASE62_BYTES[zlib.crc32(tail[random_at:checksum_at]) % 62]:
            continue
        secret = key_format.prefix[:head_length] + tail.decode("ascii")
        if key_format.is_well_formed(secret):
            yield offset, secret


def scan_bytes(data: Buffer, key_format: KeyFormat, origin: str = "-") -> Iterator[Finding]:
    """Findings in an in-memory buffer, in order."""
    lines = _Lines()
    for offset, secret in _candidates(key_format, data, 0, len(data), len(data)):
        line, column = lines.locate(data, 0, offset)
        yield Finding(origin, offset, line, column, secret)


def scan_stream(
    stream: BinaryIO,
    key_format: KeyFormat,
    origin: str = "-",
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> Iterator[Finding]:
    """Findings in a stream read chunk by chunk (stdin, pipes, devices).

    The last ``key_length - 1`` bytes of each chunk are carried into the next, so a key that
    straddles two reads is found exactly once.
    """
    overlap = key_length(key_format) - 1
    lines = _Lines()
    carry = b""
    base = 0  # absolute offset of carry[0]
    while True:
        chunk = stream.read(chunk_size)
        at_end = not chunk
        buffer = carry + chunk if carry else chunk
        stop = len(buffer) if at_end else max(0, len(buffer) - overlap)
        for offset, secret in _candidates(key_format, buffer, 0, stop, len(buffer)):
            line, column = lines.locate(buffer, base, base + offset)
            yield Finding(origin, base + offset, line, column, secret)
        lines.advance(buffer, base, base + stop)
        carry, base = buffer[stop:], base + stop
        if progress is not None and chunk:
            progress(len(chunk))
        if at_end:
            return


def scan_file(
    path: str | Path,
    key_format: KeyFormat,
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> Iterator[Finding]:
    """Findings in one file: memory-mapped when it is a regular file, streamed otherwise.

    Raises OSError when the file cannot be opened or read.
    """
    origin = str(path)
    with open(path, "rb", buffering=0) as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            yield from scan_stream(
                stream, key_format, origin, chunk_size=chunk_size, progress=progress
            )
            return
        if info.st_size == 0:
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield from _scan_mapped(mapped, key_format, origin, chunk_size, progress)


def _scan_mapped(
    mapped: mmap.mmap,
    key_format: KeyFormat,
    origin: str,
    chunk_size: int,
    progress: Progress | None,
) -> Iterator[Finding]:
    # The regex runs on the mapping itself (no copy); chunks only pace the progress bar. Each
    # chunk searches ``overlap`` bytes into the next one but keeps only keys that start
    # inside it, so a key across the boundary is found once.
    size, overlap = len(mapped), key_length(key_format) - 1
    lines = _Lines()
    for start in range(0, size, chunk_size):
        stop = min(start + chunk_size, size)
        for offset, secret in _candidates(
            key_format, mapped, start, stop, min(stop + overlap, size)
        ):
            line, column = lines.locate(mapped, 0, offset)
            yield Finding(origin, offset, line, column, secret)
        if progress is not None:
            progress(stop - start)


def files_under(
    path: str | Path, on_error: Callable[[str, OSError], None] | None = None
) -> Iterator[Path]:
    """The path itself if it is not a directory, else every regular file below it, sorted.

    Symbolic links met inside a directory are not followed (as in ripgrep), so a link loop or
    a link to ``/`` cannot run away. ``on_error(path, exc)`` hears about unreadable
    directories; without it they raise.
    """
    root = Path(path)
    if not root.is_dir():
        yield root
        return

    def failed(exc: OSError) -> None:
        if on_error is None:
            raise exc
        on_error(str(exc.filename or root), exc)

    for directory, subdirectories, names in os.walk(root, onerror=failed):
        subdirectories.sort()
        for name in sorted(names):
            candidate = Path(directory, name)
            try:
                if stat.S_ISREG(candidate.lstat().st_mode):
                    yield candidate
            except OSError as exc:
                failed(exc)


def scan_path(
    path: str | Path,
    key_format: KeyFormat,
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> Iterator[Finding]:
    """Findings in a file, or in every file of a folder tree. Raises OSError."""
    for file in files_under(path):
        yield from scan_file(file, key_format, chunk_size=chunk_size, progress=progress)


# -- looking up and revoking ------------------------------------------------------------


@dataclass(frozen=True)
class LeakedSecret:
    """A secret seen in public, with where it was seen (a URL, a file, a commit...)."""

    secret: str = field(repr=False)
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class KnownKey:
    """What the database knows about a secret found by a scan."""

    key_id: str
    tester_id: str
    tester_name: str
    status: str
    proof_bound: bool = False
    """A proof key is bound to it: the string alone is refused."""


OutcomeStatus = Literal["revoked", "already_revoked", "kept", "unknown", "malformed"]


@dataclass(frozen=True)
class LeakOutcome:
    """What a report did with one secret. ``unknown`` and ``malformed`` are not ours;
    ``kept`` is a live proof-bound key left in force because the caller keeps those."""

    status: OutcomeStatus
    key_id: str | None = None
    tester_id: str | None = None
    proof_bound: bool = False
    """The key had a proof key bound: the leaked string alone could not have been used."""

    @property
    def issued_here(self) -> bool:
        """Whether the secret is a key this gateway issued."""
        return self.status in ("revoked", "already_revoked", "kept")


@dataclass(frozen=True)
class LeakReport:
    """Outcomes in the order the secrets were reported."""

    outcomes: tuple[LeakOutcome, ...]

    @property
    def revoked(self) -> list[str]:
        """Ids of the keys this report revoked."""
        return [o.key_id for o in self.outcomes if o.status == "revoked" and o.key_id]

    @property
    def kept(self) -> list[str]:
        """Ids of the live proof-bound keys this report left in force."""
        return [o.key_id for o in self.outcomes if o.status == "kept" and o.key_id]


class LeakService:
    def __init__(
        self,
        session: Session,
        audit: AuditTrail,
        digester: SecretDigester,
        key_format: KeyFormat,
        clock: Callable[[], datetime],
    ) -> None:
        self._session = session
        self._audit = audit
        self._digester = digester
        self._format = key_format
        self._clock = clock

    def identify(self, secrets: Sequence[str]) -> list[KnownKey | None]:
        """For each secret, the key it is (None when malformed or not issued here)."""
        digests = self._digests(secrets)
        known: dict[str, KnownKey] = {}
        now = self._clock()
        wanted = sorted({d for d in digests if d is not None})
        for batch in _batches(wanted):
            rows = self._session.execute(
                select(ApiKey, Tester.name)
                .join(Tester, Tester.id == ApiKey.tester_id)
                .where(ApiKey.digest.in_(batch))
            )
            found = list(rows)
            bound = self._bound({key.id for key, _ in found})
            for key, tester_name in found:
                known[key.digest] = KnownKey(
                    key.id, key.tester_id, tester_name, effective_status(key, now), key.id in bound
                )
        return [known.get(d) if d is not None else None for d in digests]

    def _bound(self, key_ids: Iterable[str]) -> set[str]:
        """Which of the keys have a proof key in force."""
        bound: set[str] = set()
        for batch in _batches(sorted(key_ids)):
            bound.update(
                self._session.scalars(
                    select(ProofKey.key_id).where(
                        ProofKey.key_id.in_(batch), ProofKey.removed_at.is_(None)
                    )
                )
            )
        return bound

    def report(
        self,
        leaks: Sequence[LeakedSecret],
        actor: str,
        reason: str = "leaked",
        *,
        revoke_bound: bool = True,
    ) -> LeakReport:
        """Revoke every live key among the leaked secrets, at once and for good.

        Malformed, unknown and already revoked secrets are skipped. Each revocation records
        the reason with the leak's URL and source in the key row and in the audit trail,
        with whether the key was proof-bound. With ``revoke_bound`` false a live key with a
        proof key bound is kept (its string alone is refused anyway) and the leak is
        audited as ``key.leak_reported``. Raises InvalidInput when no reason is given.
        """
        reason = clean_text(reason or "", _MAX_REASON)
        if not reason:
            raise InvalidInput("a reason is required", param="reason")
        digests = self._digests([leak.secret for leak in leaks])
        keys: dict[str, ApiKey] = {}
        for batch in _batches(sorted({d for d in digests if d is not None})):
            # Rows locked in digest order: two overlapping reports cannot deadlock.
            for key in self._session.scalars(
                select(ApiKey)
                .where(ApiKey.digest.in_(batch))
                .order_by(ApiKey.digest)
                .with_for_update()
            ):
                keys[key.digest] = key
        bound = self._bound(key.id for key in keys.values())
        kept: set[str] = set()
        outcomes = []
        for leak, digest in zip(leaks, digests, strict=True):
            if digest is None:
                outcomes.append(LeakOutcome("malformed"))
                continue
            found = keys.get(digest)
            if found is None:
                outcomes.append(LeakOutcome("unknown"))
                continue
            proof_bound = found.id in bound
            if found.status == "revoked":  # also a duplicate earlier in this same report
                status: OutcomeStatus = "already_revoked"
            elif proof_bound and not revoke_bound:
                status = "kept"
                if found.id not in kept:  # once, also for a duplicate in this report
                    kept.add(found.id)
                    self._record_kept(found, actor, reason, leak)
            else:
                status = "revoked"
                self._revoke(found, actor, reason, leak, proof_bound)
            outcomes.append(LeakOutcome(status, found.id, found.tester_id, proof_bound))
            if status != "kept":
                self._revoke_self_rotated_successors(found, actor, reason, leak)
        return LeakReport(tuple(outcomes))

    def _revoke_self_rotated_successors(
        self, key: ApiKey, actor: str, reason: str, leak: LeakedSecret
    ) -> None:
        """Whoever holds a leaked key can rotate it through /v1/me and keep the successor;
        revoking only the reported secret would leave that successor live. Successors an
        admin issued are left alone: the leak could not have produced them."""
        successor_id = key.replaced_by_id
        while successor_id is not None:
            successor = self._session.get(ApiKey, successor_id, with_for_update=True)
            if successor is None or not successor.created_by.startswith("tester:"):
                return
            if successor.status != "revoked":
                self._revoke(
                    successor,
                    actor,
                    f"{reason}; successor of {key.id}, rotated by its holder",
                    leak,
                    bool(self._bound([successor.id])),
                )
            successor_id = successor.replaced_by_id

    def _revoke(
        self, key: ApiKey, actor: str, reason: str, leak: LeakedSecret, proof_bound: bool
    ) -> None:
        url, source = _where(leak)
        text = leak_reason(reason, url, source)
        key.status = "revoked"
        key.revoked_at, key.revoked_by, key.revoked_reason = self._clock(), actor, text
        self._session.flush()
        self._audit.append(
            actor,
            "key.revoke",
            key.id,
            text,
            details={
                "cause": "leak",
                "tester_id": key.tester_id,
                "url": url,
                "source": source,
                "proof_bound": proof_bound,
            },
        )

    def _record_kept(self, key: ApiKey, actor: str, reason: str, leak: LeakedSecret) -> None:
        url, source = _where(leak)
        self._audit.append(
            actor,
            "key.leak_reported",
            key.id,
            f"{leak_reason(reason, url, source)}; kept: proof-bound, the string alone is refused",
            details={
                "cause": "leak",
                "tester_id": key.tester_id,
                "url": url,
                "source": source,
                "proof_bound": True,
                "revoked": False,
            },
        )

    def _digests(self, secrets: Sequence[str]) -> list[str | None]:
        return [
            self._digester.digest(secret) if self._format.is_well_formed(secret) else None
            for secret in secrets
        ]


def _where(leak: LeakedSecret) -> tuple[str | None, str | None]:
    """Where the leak was seen, as recorded. It is the reporter's free text: cleaned, never
    refused (the key is acted on whatever it holds), and a key pasted there is masked."""
    url = clean_text(leak.url, _MAX_URL_IN_REASON) or None if leak.url else None
    source = clean_text(leak.source, _MAX_SOURCE_IN_REASON) or None if leak.source else None
    return url, source


def leak_reason(reason: str, url: str | None, source: str | None) -> str:
    """The revocation reason with where the leak was seen: ``leaked (url: ...; source: ...)``."""
    where = []
    if url:
        where.append(f"url: {_clip(url, _MAX_URL_IN_REASON)}")
    if source:
        where.append(f"source: {_clip(source, _MAX_SOURCE_IN_REASON)}")
    return f"{reason} ({'; '.join(where)})" if where else reason


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _batches(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _LOOKUP_BATCH):
        yield items[start : start + _LOOKUP_BATCH]
