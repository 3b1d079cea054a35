"""Reading an MP4's box structure, bounded: is this a whole ISO-BMFF file, and what is the
SHA-256 of its media data.

Uploads to identify come from anyone holding an auditor's token and may be hostile, so the
walk is iterative, reads only box headers (8 or 16 bytes each) except the ``mdat`` payloads
it hashes, and stops at ``MAX_BOXES`` boxes or ``MAX_DEPTH`` levels of nesting.
"""

from __future__ import annotations

import hashlib
import struct
from typing import BinaryIO

MAX_BOXES = 20_000
MAX_DEPTH = 12
READ_BYTES = 1024 * 1024
# Boxes whose payload is more boxes (ISO/IEC 14496-12); others are leaves to this walk.
CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"moof", b"traf"}
)
C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")


class NotAnMp4(ValueError):
    """The bytes are not a whole, well-formed MP4 (ISO-BMFF) file; the message says why."""


def _header(stream: BinaryIO, offset: int, end: int) -> tuple[bytes, int, int]:
    """(type, header length, box length) of the box at ``offset``. Raises NotAnMp4."""
    stream.seek(offset)
    head = stream.read(8)
    if len(head) < 8:
        raise NotAnMp4(f"truncated: a box header at byte {offset} is cut short")
    size, kind = struct.unpack(">I4s", head)
    header = 8
    if size == 1:
        large = stream.read(8)
        if len(large) < 8:
            raise NotAnMp4(f"truncated: a box header at byte {offset} is cut short")
        size, header = struct.unpack(">Q", large)[0], 16
    elif size == 0:
        size = end - offset  # "to the end of the file"
    if size < header:
        raise NotAnMp4(f"a box at byte {offset} has an impossible size ({size})")
    if offset + size > end:
        raise NotAnMp4(f"truncated: the {kind!r} box at byte {offset} runs past the end")
    return kind, header, size


def check_mp4(stream: BinaryIO, length: int) -> str:
    """Walk the whole file and return the SHA-256 (hex) of its ``mdat`` payloads in order.

    Raises NotAnMp4: no ``ftyp`` first, a box cut short or past its parent, more than
    MAX_BOXES boxes or deeper than MAX_DEPTH.
    """
    if length < 8:
        raise NotAnMp4("too short to be an MP4 file")
    media = hashlib.sha256()
    pending = [(0, length, 0)]  # (start, end, depth) of box runs still to walk
    seen = 0
    first = True
    while pending:
        offset, end, depth = pending.pop()
        children: list[tuple[int, int, int]] = []
        while offset < end:
            kind, header, size = _header(stream, offset, end)
            if first:
                if kind != b"ftyp":
                    raise NotAnMp4("not an MP4 file: it does not begin with an ftyp box")
                first = False
            seen += 1
            if seen > MAX_BOXES:
                raise NotAnMp4(f"more than {MAX_BOXES} boxes")
            if kind in CONTAINERS:
                if depth + 1 > MAX_DEPTH:
                    raise NotAnMp4(f"boxes nested deeper than {MAX_DEPTH} levels")
                children.append((offset + header, offset + size, depth + 1))
            elif kind == b"mdat" and depth == 0:
                _hash_range(stream, offset + header, offset + size, media)
            offset += size
        pending.extend(reversed(children))
    return media.hexdigest()


def _hash_range(stream: BinaryIO, start: int, end: int, into: hashlib._Hash) -> None:
    stream.seek(start)
    left = end - start
    while left > 0:
        chunk = stream.read(min(READ_BYTES, left))
        if not chunk:
            raise NotAnMp4("truncated: media data is cut short")
        into.update(chunk)
        left -= len(chunk)


def without_c2pa(data: bytes) -> bytes:
    """The file with its top-level C2PA ``uuid`` boxes cut out, nothing else changed: what a
    tool that strips metadata without rewriting the file leaves (used by tests and docs)."""
    out, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        box = data[offset : offset + size]
        if not (kind == b"uuid" and box[8:24] == C2PA_UUID):
            out.append(box)
        offset += max(size, 8)
    return b"".join(out)
