"""JSON bodies as the simulator sends them: in key order, or padded to a given size."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Response

from gateway.simulator.content import BLOCK_BYTES, repeat


def json_response(payload: object, status: int = 200) -> Response:
    """A JSON response keeping key order (clients and humans read the object top-down)."""
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def padded_json(payload: Mapping[str, Any], size: int) -> tuple[int, Iterator[bytes]]:
    """Stream `payload` as JSON grown to `size` bytes by a trailing "padding" string."""
    # Serialising with an empty padding and cutting its closing '"}' leaves the open string.
    head = json.dumps({**payload, "padding": ""}, separators=(",", ":"))[:-2].encode()
    tail = b'"}'
    pad = max(0, size - len(head) - len(tail))

    def chunks() -> Iterator[bytes]:
        yield head
        yield from repeat(b"x" * BLOCK_BYTES, pad)
        yield tail

    return len(head) + pad + len(tail), chunks()
