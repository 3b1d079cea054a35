"""Audit trail exports, and their verification with nothing but the exported files.

An export is a directory (the format is documented in docs/audit.md):

    entries.jsonl      one entry per line, in seq order: the fields its hash covers, plus
                       prev_hash and hash; ``at`` is the exact text the hash covers
    checkpoints.jsonl  one signed checkpoint per line, in seq order
    public_key.pem     the Ed25519 public key that signs checkpoints
    README.txt         what the export holds and how to verify it

Offline verification needs no database and no root secret: it walks the chain and checks
each checkpoint with the public key, pinned by the caller when it was obtained out of band.
The files are read as streams, so memory stays flat whatever the trail's length.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from keys.records.audit import (
    Anchor,
    AuditTrail,
    ChainLink,
    SignedCheckpoint,
    Verification,
    canonical_time,
    verify_chain,
)
from keys.records.audit_signing import AuditKeyError, AuditVerifier

ENTRIES_FILE = "entries.jsonl"
CHECKPOINTS_FILE = "checkpoints.jsonl"
PUBLIC_KEY_FILE = "public_key.pem"
README_FILE = "README.txt"
PROGRESS_EVERY = 1000

_ENTRY_FIELDS = {
    "seq": int,
    "at": str,
    "actor": str,
    "action": str,
    "target": str,
    "reason": (str, type(None)),
    "details": dict,
    "prev_hash": str,
    "hash": str,
}
_CHECKPOINT_FIELDS = {"seq": int, "hash": str, "at": str, "key_id": str, "signature": str}


class ExportError(Exception):
    """An export cannot be written, or a file of one cannot be read. ``seq`` is the entry
    the problem is at, when one can be named."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class ExportSummary:
    directory: Path
    entries: int
    checkpoints: int
    head_hash: str | None
    key_id: str


# -- writing ---------------------------------------------------------------------------


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_export(
    trail: AuditTrail,
    directory: Path,
    exported_at: datetime,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the trail into ``directory`` (created; must be empty), streaming from the
    database; ``progress`` hears the count of entries written every PROGRESS_EVERY entries.
    Raises ExportError when the directory is in use or no signer is configured."""
    signer = trail.signer
    if signer is None:
        raise ExportError("no audit signing key is configured: the export would be unverifiable")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not an empty directory")
    directory.mkdir(parents=True, exist_ok=True)

    snapshot = trail.snapshot()
    entries, head_hash = 0, None
    with (directory / ENTRIES_FILE).open("w", encoding="utf-8", newline="\n") as stream:
        for link in snapshot.entries:
            stream.write(_json_line(link.as_record()))
            entries, head_hash = entries + 1, link.hash
            if progress is not None and entries % PROGRESS_EVERY == 0:
                progress(entries)
    checkpoints = 0
    with (directory / CHECKPOINTS_FILE).open("w", encoding="utf-8", newline="\n") as stream:
        for checkpoint in snapshot.checkpoints:
            stream.write(_json_line(checkpoint.as_record()))
            checkpoints += 1
    (directory / PUBLIC_KEY_FILE).write_text(signer.public_key_pem(), encoding="ascii")
    summary = ExportSummary(directory, entries, checkpoints, head_hash, signer.key_id)
    (directory / README_FILE).write_text(_readme(summary, exported_at), encoding="utf-8")
    return summary


def _readme(summary: ExportSummary, exported_at: datetime) -> str:
    return f"""Drawbridge audit trail export
=============================

Exported at:       {canonical_time(exported_at)}
Entries:           {summary.entries} (seq 1 to {summary.entries})
Head hash:         {summary.head_hash or "(empty trail)"}
Checkpoints:       {summary.checkpoints}
Signing key id:    {summary.key_id} (Ed25519, {PUBLIC_KEY_FILE})

Files
  {ENTRIES_FILE}      one JSON object per line, in seq order: seq, at, actor, action,
                     target, reason, details, prev_hash, hash
  {CHECKPOINTS_FILE}  one JSON object per line, in seq order: seq, hash, at, key_id,
                     signature (128 hex digits, Ed25519)
  {PUBLIC_KEY_FILE}     the public key that signs checkpoints (SubjectPublicKeyInfo PEM)

How to verify (docs/audit.md in the Drawbridge sources states every byte)
  1. Obtain the signing public key OUT OF BAND (GET /admin/v1/audit/public-key, or the key
     id recorded when the deployment was set up) and check that its key id - the first 16
     hex digits of SHA-256 over the raw 32-byte key - is {summary.key_id}. The copy in this
     folder proves nothing on its own: whoever could alter the files could replace it.
  2. Walk {ENTRIES_FILE} from the first line. With prev = 64 "0" characters:
       - seq must be 1, 2, 3, ... without gaps, and prev_hash must equal prev;
       - canonical = UTF-8 of JSON of {{seq, at, actor, action, target, reason, details}}
         with keys sorted, no whitespace (separators "," and ":"), non-ASCII unescaped;
       - hash must equal hex(SHA-256(prev + "\\n" + canonical)); then prev = hash.
  3. For every line of {CHECKPOINTS_FILE}: key_id must be the trusted key's id; the
     signature must verify over the message
       "drawbridge-audit-checkpoint/v1\\nseq=<seq>\\nhash=<hash>\\nat=<at>\\nkey_id=<key_id>\\n"
     and hash must equal the hash of the entry at seq (which must exist).
  4. Keep this folder. A later export, or the live database (drawbridge audit verify
     --against THIS_FOLDER), must contain every checkpoint here and this head hash at
     seq {summary.entries}; if it does not, entries were removed or rewritten.

With Drawbridge installed:  drawbridge audit verify-export THIS_FOLDER --public-key KEY.pem
"""


# -- reading ---------------------------------------------------------------------------


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise ValueError("a field appears twice")
    return record


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _record(text: str, fields: dict[str, Any]) -> dict[str, Any]:
    """One JSON object with exactly ``fields``, each of its type. Raises ValueError."""
    record = json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if set(record) != set(fields):
        missing, extra = set(fields) - set(record), set(record) - set(fields)
        raise ValueError(f"fields missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, kind in fields.items():
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{name} has the wrong type")
    return record


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8", newline="\n") as stream:
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    yield number, line
    except FileNotFoundError:
        raise ExportError(f"{path.name} is missing") from None
    except UnicodeDecodeError:
        raise ExportError(f"{path.name} is not UTF-8") from None


def read_entries(path: Path) -> Iterator[ChainLink]:
    """The entries of an entries.jsonl. Raises ExportError at a line that is not one; its
    ``seq`` is the seq that line should hold."""
    expected = 1
    for number, line in _lines(path):
        try:
            record = _record(line, _ENTRY_FIELDS)
        except ValueError as exc:
            raise ExportError(f"{path.name} line {number}: {exc}", seq=expected) from None
        yield ChainLink(**record)
        expected = record["seq"] + 1


def read_checkpoints(path: Path) -> Iterator[SignedCheckpoint]:
    """The checkpoints of a checkpoints.jsonl. Raises ExportError at a line that is not one."""
    for number, line in _lines(path):
        try:
            record = _record(line, _CHECKPOINT_FIELDS)
        except ValueError as exc:
            raise ExportError(f"{path.name} line {number}: {exc}") from None
        yield SignedCheckpoint(**record)


def read_public_key(path: Path) -> AuditVerifier:
    """Raises ExportError when the file is missing or holds no Ed25519 public key."""
    try:
        return AuditVerifier.from_pem(path.read_bytes())
    except FileNotFoundError:
        raise ExportError(f"{path.name} is missing") from None
    except AuditKeyError as exc:
        raise ExportError(f"{path.name}: {exc}") from None


def verify_export(directory: Path, trusted_key: AuditVerifier | None = None) -> Verification:
    """Check an export with its files only: the chain, and every checkpoint against the
    export's public key, which must be ``trusted_key`` when one is given."""
    try:
        key = read_public_key(directory / PUBLIC_KEY_FILE)
        if trusted_key is not None and key.key_id != trusted_key.key_id:
            return Verification(
                False,
                0,
                problem=f"{PUBLIC_KEY_FILE} holds key {key.key_id}, "
                f"not the trusted key {trusted_key.key_id}",
                key_id=trusted_key.key_id,
            )
        return verify_chain(
            read_entries(directory / ENTRIES_FILE),
            read_checkpoints(directory / CHECKPOINTS_FILE),
            trusted_key or key,
        )
    except ExportError as exc:
        key_id = trusted_key.key_id if trusted_key is not None else None
        return Verification(False, 0, exc.seq, str(exc), key_id=key_id)


def read_anchors(path: Path, verifier: AuditVerifier | None = None) -> list[Anchor]:
    """What an earlier export (a directory) or a file of checkpoints says the chain holds:
    every checkpoint, and for a directory also its last entry. A checkpoint file is JSON
    lines, or one JSON document: a checkpoint, a list of them, or an admin API listing.

    With ``verifier``, each checkpoint's signature must verify: a forged anchor would
    otherwise blame the database for the file's fault. Raises ExportError."""
    if path.is_dir():
        checkpoints = list(read_checkpoints(path / CHECKPOINTS_FILE))
        last = deque(read_entries(path / ENTRIES_FILE), maxlen=1)
        extra = [Anchor(head.seq, head.hash, "exported head entry") for head in last]
    else:
        checkpoints = _checkpoint_file(path)
        extra = []
    for checkpoint in checkpoints:
        if verifier is not None and not (
            checkpoint.key_id == verifier.key_id
            and verifier.verify(checkpoint.message(), checkpoint.signature)
        ):
            raise ExportError(
                f"{path}: the checkpoint at seq {checkpoint.seq} is not signed by key "
                f"{verifier.key_id}, so it cannot vouch for anything"
            )
    return [Anchor(c.seq, c.hash, "exported checkpoint") for c in checkpoints] + extra


def _checkpoint_file(path: Path) -> list[SignedCheckpoint]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: cannot read ({exc})") from None
    try:
        document = json.loads(text)
    except ValueError:
        return list(read_checkpoints(path))
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    items = document if isinstance(document, list) else [document]
    checkpoints = []
    for number, item in enumerate(items, start=1):
        try:
            record = _record(json.dumps(item), _CHECKPOINT_FIELDS)
        except ValueError as exc:
            raise ExportError(f"{path} checkpoint {number}: {exc}") from None
        checkpoints.append(SignedCheckpoint(**record))
    return checkpoints
