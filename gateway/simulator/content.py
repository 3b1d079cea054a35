"""The bytes of rendered assets: deterministic per video and variant, streamed, never stored."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

VARIANT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
PREVIEW_BYTES = 16 * 1024  # thumbnails and spritesheets are small whatever the video size
BLOCK_BYTES = 64 * 1024  # content is one seeded block repeated, so 1 GiB costs 64 KiB of memory


def repeat(block: bytes, size: int) -> Iterator[bytes]:
    """Yield `block` over and over, cut so exactly `size` bytes come out."""
    full, rest = divmod(size, len(block))
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def content_block(video_id: str, variant: str) -> bytes:
    """The deterministic 64 KiB block a video's content is made of."""
    return hashlib.shake_256(f"{video_id}/{variant}".encode()).digest(BLOCK_BYTES)
