"""Reading an MP4's box structure, bounded: is this a whole ISO-BMFF file, and what is the
SHA-256 of its media data.

Uploads to identify come from anyone holding an auditor's token and may be hostile, so the
walk is iterative, reads only box headers (8 or 16 bytes each) except the ``mdat`` payloads
it hashes, and stops at ``MAX_BOXES`` boxes or ``MAX_DEPTH`` levels of nesting.
"""

from __future__ import annotations

import hashlib
import io
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
    _walk(stream, 0, length, 0, media, 0, require_ftyp=True)
    return media.hexdigest()


def _walk(
    stream: BinaryIO,
    start: int,
    end: int,
    depth: int,
    media: hashlib._Hash,
    seen: int,
    require_ftyp: bool = False,
) -> int:
    """Walk the boxes in ``[start, end)`` at ``depth`` and everything nested in them;
    returns how many boxes were seen in all (``seen`` before)."""
    pending = [(start, end, depth)]  # (start, end, depth) of box runs still to walk
    first = require_ftyp
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
    return seen


class StreamedMp4:
    """The same checks as ``check_mp4`` and the same media hash, on bytes as they stream
    past (``feed``), for a file of ``length`` bytes: top-level boxes are followed by their
    headers, ``mdat`` payloads hashed on the way, and the other top-level containers
    (``moov``: kilobytes) held only while their children are walked, up to
    ``MAX_HELD_BYTES``. ``finish`` returns the media hash (None with ``hash_media=False``:
    the caller knows it already, for the same bytes). Raises NotAnMp4."""

    MAX_HELD_BYTES = 16 * 1024 * 1024

    def __init__(self, length: int, hash_media: bool = True) -> None:
        if length < 8:
            raise NotAnMp4("too short to be an MP4 file")
        self._length = length
        self._offset = 0  # where the current box (or the next header) starts
        self._head = bytearray()  # a header being read
        self._remaining = 0  # payload bytes of the current box still to come
        self._kind = b""
        self._held: bytearray | None = None
        self._header = 0
        self._size = 0
        self._media = hashlib.sha256()
        self._hash_media = hash_media
        self._seen = 0

    def feed(self, chunk: bytes) -> None:
        view, pos = memoryview(chunk), 0
        while pos < len(view):
            if self._remaining == 0 and not self._in_box():
                pos = self._read_header(view, pos)
                continue
            take = min(self._remaining, len(view) - pos)
            piece = view[pos : pos + take]
            if self._kind == b"mdat":
                if self._hash_media:
                    self._media.update(piece)
            elif self._held is not None:
                self._held += piece
            self._remaining -= take
            pos += take
            if self._remaining == 0:
                self._end_box()

    def finish(self) -> str | None:
        if self._head or self._in_box() or self._offset != self._length:
            raise NotAnMp4("truncated: the file ends inside a box")
        if self._seen == 0:
            raise NotAnMp4("too short to be an MP4 file")
        return self._media.hexdigest() if self._hash_media else None

    def _in_box(self) -> bool:
        return self._header > 0

    def _read_header(self, view: memoryview, pos: int) -> int:
        need = 16 if len(self._head) >= 8 and self._head[:4] == b"\0\0\0\x01" else 8
        take = min(need - len(self._head), len(view) - pos)
        self._head += view[pos : pos + take]
        pos += take
        if len(self._head) < need:
            return pos
        size, kind = struct.unpack(">I4s", self._head[:8])
        if size == 1 and need == 8:
            return pos  # a 64-bit size follows
        header = need
        if size == 1:
            size = struct.unpack(">Q", self._head[8:16])[0]
        elif size == 0:
            size = self._length - self._offset  # "to the end of the file"
        offset = self._offset
        if self._seen == 0 and kind != b"ftyp":
            raise NotAnMp4("not an MP4 file: it does not begin with an ftyp box")
        if size < header:
            raise NotAnMp4(f"a box at byte {offset} has an impossible size ({size})")
        if offset + size > self._length:
            raise NotAnMp4(f"truncated: the {kind!r} box at byte {offset} runs past the end")
        self._seen += 1
        if self._seen > MAX_BOXES:
            raise NotAnMp4(f"more than {MAX_BOXES} boxes")
        self._kind, self._header, self._size = kind, header, size
        self._remaining = size - header
        if kind in CONTAINERS:
            if size > self.MAX_HELD_BYTES:
                raise NotAnMp4(f"a {kind!r} box of {size} bytes is too large to check")
            self._held = bytearray(self._head)
        self._head = bytearray()
        if self._remaining == 0:
            self._end_box()
        return pos

    def _end_box(self) -> None:
        if self._held is not None:
            held = io.BytesIO(bytes(self._held))
            self._seen = _walk(held, self._header, self._size, 1, self._media, self._seen)
        self._offset += self._size
        self._held, self._header, self._kind = None, 0, b""


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
