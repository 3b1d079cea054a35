"""The tester API: OpenAI's Videos surface, proxied with ownership, policy and quota.

Each view parses the request, calls a service (gateway/services/videos.py and
generations.py) and renders the answer. Upstream, every video belongs to the master
credential; here a video the caller does not own answers 404, exactly like one that does
not exist. A held generation is an ordinary video under a gateway id until an approver
decides, so unmodified clients simply keep polling.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, Response, request

from gateway.http.auth import current_principal, requested_video, require_tester
from gateway.http.current import current_context, current_state
from gateway.http.errors import ApiError
from gateway.http.inputs import json_document
from gateway.services import videos
from gateway.services.generations import generate
from gateway.services.provenance import Recipient, open_delivery
from gateway.tester.idempotency import once_per_key
from gateway.tester.usage_event import usage_record
from gateway.tester.video_forms import (
    CREATE_CONTENT_TYPES,
    forwarded_body,
    generation_request,
    media_type,
    prompt_of,
)
from gateway.upstream.client import CONTENT_VARIANTS, POLL_AFTER_HEADER, video_path
from keys.limits.policies import GenerationRequest
from keys.records.usage import ADMITTED, UsageRecord

bp = Blueprint("videos", __name__, url_prefix="/v1")


# json.dumps with separators= builds a new encoder per call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def _json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    # What jsonify writes (compact, ASCII, a final newline) for bodies that are JSON already
    # (the backend's answer, stored snapshots), without its provider lookups.
    return Response(
        _COMPACT_JSON.encode(body) + "\n",
        mimetype="application/json",
        headers=headers,
    )


def _generate(
    generation: GenerationRequest,
    forwarded: tuple[bytes, str],
    path: str,
    remix_of: tuple[str, str] | None = None,
) -> dict[str, Any]:
    def admitted() -> UsageRecord:
        return usage_record(status=0, outcome=ADMITTED)

    return generate(
        current_state(), current_context(), generation, forwarded, path, admitted, remix_of
    )


@bp.post("/videos")
@require_tester
def create_video() -> Response:
    if media_type() not in CREATE_CONTENT_TYPES:
        raise ApiError(
            415,
            "Send the video request as multipart/form-data or application/json.",
            "unsupported_media_type",
        )
    generation = generation_request()
    return _json_response(
        once_per_key(lambda: _generate(generation, forwarded_body(generation), "videos"))
    )


@bp.get("/videos")
@require_tester
def list_videos() -> Response:
    limit_text = request.args.get("limit", "20")
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (limit_text.isascii() and limit_text.isdigit()) or len(limit_text) > 9:
        raise ApiError(
            400, "limit must be an integer between 1 and 100", "invalid_value", param="limit"
        )
    data, has_more = videos.list_videos(
        current_state(),
        current_context(),
        current_principal().tester_id,
        after=request.args.get("after") or None,
        limit=int(limit_text),
        order=request.args.get("order", "desc"),
    )
    return _json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


@bp.get("/videos/<video_id>")
@require_tester
def retrieve_video(video_id: str) -> Response:
    body, headers = videos.current_video(
        current_state(), current_context(), requested_video(video_id)
    )
    if body.get("status") in ("queued", "in_progress"):
        headers[POLL_AFTER_HEADER] = _poll_interval(headers.get(POLL_AFTER_HEADER))
    return _json_response(body, headers)


def _poll_interval(suggested: str | None) -> str:
    """The backend's poll interval, slowed so that one poller stays within half of the
    key's per-minute rate limit: a client that honours it (the openai SDK does) never
    meets a 429 while it waits for its video."""
    floor = math.ceil(2 * 60_000 / max(current_principal().policy.requests_per_minute, 1))
    try:
        wanted = int(suggested) if suggested is not None else 0
    except ValueError:
        wanted = 0
    return str(max(wanted, floor))


@bp.delete("/videos/<video_id>")
@require_tester
def delete_video(video_id: str) -> Response:
    videos.delete_video(current_state(), current_context(), requested_video(video_id))
    return _json_response({"id": video_id, "object": "video.deleted", "deleted": True})


@bp.get("/videos/<video_id>/content")
@require_tester
def download_content(video_id: str) -> Response:
    variant = content_variant()
    status, headers, chunks = videos.open_content(
        current_state(),
        current_context(),
        current_principal(),
        requested_video(video_id),
        variant,
        on_deadline=client_cutter(),
    )
    return Response(chunks, status=status, headers=headers, direct_passthrough=True)


def content_variant() -> str:
    """The ``variant`` query parameter of a content download. Raises ApiError (400)."""
    variant = request.args.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        raise ApiError(
            400,
            f"variant must be one of {', '.join(sorted(CONTENT_VARIANTS))}",
            "invalid_value",
            param="variant",
        )
    return variant


def stream_content(upstream_id: str, video_id: str, recipient: Recipient, variant: str) -> Response:
    """Stream a video's content from the backend, never holding it whole in memory (share
    links and the approvers' console preview, which have no tester admission)."""
    status, headers, chunks = open_delivery(
        current_state(),
        current_context(),
        upstream_id,
        video_id,
        recipient,
        variant,
        client_cutter(),
    )
    return Response(chunks, status=status, headers=headers, direct_passthrough=True)


def client_cutter() -> Callable[[], None] | None:
    """What ends the download for the client at the download deadline: shutting its socket
    (gunicorn's), so a client that stopped reading frees the thread blocked writing to it."""
    client = request.environ.get("gunicorn.socket")
    if not isinstance(client, socket.socket):
        return None
    return partial(client.shutdown, socket.SHUT_RDWR)


@bp.post("/videos/<video_id>/remix")
@require_tester
def remix_video(video_id: str) -> Response:
    payload = json_document()
    prompt = prompt_of(payload if isinstance(payload, dict) else {})
    source = requested_video(video_id)
    if source.upstream_id is None:
        raise videos.not_ready(video_id)
    remix = GenerationRequest(
        model=str(source.snapshot.get("model", "sora-2")),
        size=str(source.snapshot.get("size", "720x1280")),
        seconds=source.video_seconds or int(str(source.snapshot.get("seconds", "4"))),
        prompt=prompt,
    )
    forwarded = (json.dumps({"prompt": prompt}).encode(), "application/json")
    upstream_path = video_path(source.upstream_id, "/remix")
    remix_of = (source.id, str(source.upstream_id))
    return _json_response(
        once_per_key(lambda: _generate(remix, forwarded, upstream_path, remix_of))
    )
