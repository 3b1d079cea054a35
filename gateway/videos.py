"""The tester API: OpenAI's Videos surface, proxied with ownership, policy and quota.

Upstream, every video belongs to the master credential; here a video the caller does not own
answers 404, exactly like one that does not exist. A held generation is an ordinary video
under a gateway id until an approver decides, so unmodified clients simply keep polling.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Blueprint, Response, g, request

from gateway.auth import current_principal, requested_video, require_tester
from gateway.errors import ApiError
from gateway.generation_requests import (
    CREATE_CONTENT_TYPES,
    forwarded_body,
    generation_request,
    media_type,
    prompt_of,
)
from gateway.generations import call_upstream, generate
from gateway.idempotency import once_per_key
from gateway.inputs import json_document
from gateway.state import current_state
from gateway.upstream import CONTENT_VARIANTS, video_path
from keys.gate import VideoRef
from keys.generations import present
from keys.models import Video
from keys.policies import GenerationRequest
from keys.videos import TERMINAL_STATUSES

bp = Blueprint("videos", __name__, url_prefix="/v1")

# How often clients are asked to poll a video an approver has not decided on yet.
HELD_POLL_AFTER_MS = "2000"


def _json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    # What jsonify writes (compact, ASCII, a final newline) for bodies that are JSON already
    # (the backend's answer, stored snapshots), without its provider lookups.
    return Response(
        json.dumps(body, separators=(",", ":")) + "\n",
        mimetype="application/json",
        headers=headers,
    )


def _upstream_id(video_id: str) -> str | None:
    return requested_video(video_id).upstream_id


def _not_ready(video_id: str) -> ApiError:
    return ApiError(
        400,
        f"Video '{video_id}' is not ready: it is waiting for an approver's decision.",
        "video_not_ready",
    )


def _current(video: Video | VideoRef) -> tuple[dict[str, Any], dict[str, str]]:
    """The video as the tester sees it now, and headers worth passing on."""
    if video.upstream_id is None:
        return dict(video.snapshot), {"openai-poll-after-ms": HELD_POLL_AFTER_MS}
    answer = call_upstream("GET", video_path(video.upstream_id))
    body = present(answer.body, video.id, video.snapshot.get("remixed_from_video_id"))
    # Polls stay read-only until the status moves.
    if body.get("status") != video.status:
        with current_state().store.transaction() as tx:
            tx.generations.observe(video.id, body)
    return body, dict(answer.headers)


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

    def create() -> dict[str, Any]:
        body, content_type = forwarded_body(generation)
        return generate(generation, body, content_type, path="videos")

    return _json_response(once_per_key(create))


@bp.get("/videos")
@require_tester
def list_videos() -> Response:
    limit_text = request.args.get("limit", "20")
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (limit_text.isascii() and limit_text.isdigit()) or len(limit_text) > 9:
        raise ApiError(
            400, "limit must be an integer between 1 and 100", "invalid_value", param="limit"
        )
    with current_state().store.read() as tx:
        page = tx.videos.page(
            current_principal().tester_id,
            after=request.args.get("after") or None,
            limit=int(limit_text),
            order=request.args.get("order", "desc"),
        )
    data = [
        dict(video.snapshot) if video.status in TERMINAL_STATUSES else _current(video)[0]
        for video in page.videos
    ]
    return _json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


@bp.get("/videos/<video_id>")
@require_tester
def retrieve_video(video_id: str) -> Response:
    body, headers = _current(requested_video(video_id))
    if body.get("status") in ("queued", "in_progress"):
        headers["openai-poll-after-ms"] = _poll_interval(headers.get("openai-poll-after-ms"))
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
    upstream_id = _upstream_id(video_id)
    lost: ApiError | None = None
    if upstream_id is not None:
        try:
            call_upstream("DELETE", video_path(upstream_id))
        except ApiError as exc:
            if exc.status != 404:
                raise
            lost = exc  # already gone upstream: forget it here too, and say so
    with current_state().store.transaction() as tx:
        tx.generations.deleted(video_id, ran=upstream_id is not None)
    if lost is not None:
        raise ApiError(404, f"No video found with id '{video_id}'.", "not_found")
    return _json_response({"id": video_id, "object": "video.deleted", "deleted": True})


def _require_download_approval(video_id: str) -> None:
    """In cohorts that review downloads, only an approved request lets the content out."""
    principal = current_principal()
    with current_state().store.transaction() as tx:
        approval = tx.approvals.latest(video_id, "download")
        if approval is not None and approval.status == "approved":
            return
        if approval is None:
            approval = tx.approvals.hold(
                "download",
                principal.tester_id,
                principal.key_id,
                video_id,
                "Your cohort's downloads are reviewed before release.",
            )
        if approval.status == "rejected":
            raise ApiError(
                403,
                f"Download rejected by a reviewer: {approval.decision_reason}",
                "approval_rejected",
            )
    raise ApiError(
        403,
        f"Downloading this video needs an approver's decision (request {approval.id} is "
        "pending); GET /v1/me lists its status.",
        "approval_required",
    )


@bp.get("/videos/<video_id>/content")
@require_tester
def download_content(video_id: str) -> Response:
    variant = request.args.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        raise ApiError(
            400,
            f"variant must be one of {', '.join(sorted(CONTENT_VARIANTS))}",
            "invalid_value",
            param="variant",
        )
    upstream_id = _upstream_id(video_id)
    if upstream_id is None:
        raise _not_ready(video_id)
    if current_principal().policy.content_requires_approval:
        _require_download_approval(video_id)
    return stream_content(upstream_id, variant)


def stream_content(upstream_id: str, variant: str) -> Response:
    """Stream a video's content from the backend, never holding it whole."""
    status, headers, chunks = current_state().upstream.open_stream(
        video_path(upstream_id, "/content"),
        request_id=g.request_id,
        params={"variant": variant},
        on_deadline=_client_cutter(),
    )
    return Response(chunks, status=status, headers=headers, direct_passthrough=True)


def _client_cutter() -> Callable[[], None] | None:
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
        raise _not_ready(video_id)
    remix = GenerationRequest(
        model=str(source.snapshot.get("model", "sora-2")),
        size=str(source.snapshot.get("size", "720x1280")),
        seconds=source.video_seconds or int(str(source.snapshot.get("seconds", "4"))),
        prompt=prompt,
    )
    upstream_path = video_path(source.upstream_id, "/remix")
    snapshot = once_per_key(
        lambda: generate(
            remix,
            json.dumps({"prompt": prompt}).encode(),
            "application/json",
            path=upstream_path,
            remix_of=(source.id, str(source.upstream_id)),
        )
    )
    return _json_response(snapshot)
