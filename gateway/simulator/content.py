"""The bytes of rendered assets: real, playable files, deterministic per video and variant.

A video is a small H.264 MP4 (PyAV; MPEG-4 Part 2 where the wheel has no x264) encoded
once per (size, seconds) at a tenth of the requested width and cached, followed by one
more ``mdat`` box of bytes seeded by the video's id. That box makes every video's bytes
its own, and pads the file to ``content_bytes`` (players skip a box no track points to),
so a 30 MiB file costs 64 KiB of memory: it is streamed from one repeated block.

Thumbnails (WebP) and spritesheets (JPEG) are real images of the video's first frame and
of a strip of frames, also cached per size.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from fractions import Fraction
from functools import lru_cache

import av

VARIANT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
BLOCK_BYTES = 64 * 1024  # the padding is one seeded block repeated
FRAMES_PER_SECOND = 4  # few frames: the files are for containers and players, not viewing
MAX_RENDER_SECONDS = 4  # longer videos loop the same frames: same container, same cost
SCALE = 10  # a 1280x720 request renders at 128x72
MIN_SIDE = 16
# The smallest id box: the 8-byte header and 64 bytes of the video's own seed.
MIN_ID_BOX = 8 + 64


def repeat(block: bytes, size: int) -> Iterator[bytes]:
    """Yield `block` over and over, cut so exactly `size` bytes come out."""
    full, rest = divmod(size, len(block))
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def content_block(video_id: str, variant: str) -> bytes:
    """The deterministic 64 KiB block a video's padding is made of."""
    return hashlib.shake_256(f"{video_id}/{variant}".encode()).digest(BLOCK_BYTES)


def rendered_size(size: str) -> tuple[int, int]:
    """The requested ``WxH`` scaled down, even sides (what yuv420p needs), at least 16."""
    try:
        width, height = (int(part) for part in size.lower().split("x", 1))
    except ValueError:
        width, height = 1280, 720
    return tuple(max(MIN_SIDE, (side // SCALE) // 2 * 2) for side in (width, height))  # type: ignore[return-value]


def _frames(width: int, height: int, count: int) -> Iterator[av.VideoFrame]:
    """Frames of moving colour bands: cheap to make, visibly a video when played."""
    for index in range(count):
        frame = av.VideoFrame(width, height, "yuv420p")
        luma, u_plane, v_plane = frame.planes
        row = bytes((16 + (x * 4 + index * 12) % 220) for x in range(luma.line_size))
        luma.update(row * height)
        u_plane.update(bytes([(index * 37) % 256]) * u_plane.buffer_size)
        v_plane.update(bytes([(255 - index * 23) % 256]) * v_plane.buffer_size)
        frame.pts = index
        yield frame


def _codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


@lru_cache(maxsize=32)
def base_mp4(size: str, seconds: int) -> bytes:
    """The encoded MP4 for a (size, seconds), a few KiB; made once per process."""
    width, height = rendered_size(size)
    count = FRAMES_PER_SECOND * max(1, min(seconds, MAX_RENDER_SECONDS))
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream: av.VideoStream = container.add_stream(_codec(), rate=FRAMES_PER_SECOND)  # type: ignore[assignment]
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in _frames(width, height, count):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def video_length(size: str, seconds: int, content_bytes: int) -> int:
    """How many bytes the video has: ``content_bytes``, or the smallest real file."""
    return max(content_bytes, len(base_mp4(size, seconds)) + MIN_ID_BOX)


def video_chunks(video_id: str, size: str, seconds: int, content_bytes: int) -> Iterator[bytes]:
    """The video's bytes: the encoded MP4, then the id box that pads it to its length."""
    encoded = base_mp4(size, seconds)
    box = video_length(size, seconds, content_bytes) - len(encoded)
    yield encoded
    if box > 0xFFFFFFFF:
        yield struct.pack(">I4sQ", 1, b"mdat", box)
        payload = box - 16
    else:
        yield struct.pack(">I4s", box, b"mdat")
        payload = box - 8
    yield from repeat(content_block(video_id, "video"), payload)


def content_etag(video_id: str, size: str, seconds: int, content_bytes: int, variant: str) -> str:
    """The asset's strong entity tag (unquoted): a digest of all that decides its bytes."""
    facts = f"{video_id}/{size}/{seconds}/{content_bytes}/{variant}/{_codec()}"
    return hashlib.sha256(facts.encode()).hexdigest()[:32]


@lru_cache(maxsize=32)
def preview_image(size: str, variant: str) -> bytes:
    """A thumbnail (WebP, the first frame) or spritesheet (JPEG, four frames side by side)."""
    width, height = rendered_size(size)
    frames = list(_frames(width, height, 4))
    if variant == "spritesheet":
        sheet = av.VideoFrame(width * 4, height, "yuv420p")
        for plane_index, plane in enumerate(sheet.planes):
            rows = []
            sources = [bytes(frame.planes[plane_index]) for frame in frames]
            source_line = frames[0].planes[plane_index].line_size
            plane_height = len(sources[0]) // source_line
            for y in range(plane_height):
                line = b"".join(
                    src[y * source_line : y * source_line + source_line] for src in sources
                )
                rows.append(line.ljust(plane.line_size, b"\x80")[: plane.line_size])
            plane.update(b"".join(rows).ljust(plane.buffer_size, b"\x80")[: plane.buffer_size])
        return _encode_image(sheet, "mjpeg", "yuvj420p")
    return _encode_image(frames[0], "libwebp", "yuv420p")


def _encode_image(frame: av.VideoFrame, codec_name: str, pix_fmt: str) -> bytes:
    codec: av.VideoCodecContext = av.CodecContext.create(codec_name, "w")  # type: ignore[assignment]
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, pix_fmt
    codec.time_base = Fraction(1, 1)
    converted = frame.reformat(format=pix_fmt)
    converted.pts = 0
    packets = codec.encode(converted) + codec.encode(None)
    # One packet, a whole file: libwebp's is RIFF/WEBP, mjpeg's a JFIF JPEG.
    return b"".join(bytes(packet) for packet in packets)
