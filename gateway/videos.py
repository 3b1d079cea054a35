"""The tester API: OpenAI's Videos surface, proxied with ownership enforced.

Upstream, every video belongs to the master credential; here a video the caller does not own
answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from gateway.auth import current_principal, require_tester
from gateway.errors import ApiError
from gateway.state import current_state
from gateway.upstream import CONTENT_VARIANTS, video_path
from keys.videos import TERMINAL_STATUSES

bp = Blueprint("videos", __name__, url_prefix="/v1")

_CREATE_CONTENT_TYPES = ("multipart/form-data", "application/json")


def _request_id() -> str:
    request_id: str = g.request_id
    return request_id


def _json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _owned_or_404(video_id: str) -> None:
    video_path(video_id)  # refuses ids that could never be valid before touching storage
    with current_state().store.read() as tx:
        if not tx.videos.is_owned(video_id, current_principal().tester_id):
            raise ApiError(404, f"No video found with id '{video_id}'.", "not_found")


def _created_video(body: dict[str, Any]) -> dict[str, Any]:
    video_id = body.get("id")
    if not isinstance(video_id, str) or not video_id:
        raise ApiError(502, "The generation backend sent an unreadable answer.", "upstream_error")
    video_path(video_id)
    principal = current_principal()
    with current_state().store.transaction() as tx:
        tx.videos.record(video_id, principal.tester_id, principal.key_id, body)
    return body


@bp.post("/videos")
@require_tester
def create_video() -> Response:
    content_type = request.headers.get("Content-Type", "")
    if not content_type.lower().startswith(_CREATE_CONTENT_TYPES):
        raise ApiError(
            415,
            "Send the video request as multipart/form-data or application/json.",
            "unsupported_media_type",
        )
    body = request.get_data(cache=False)
    answer = current_state().upstream.call_json(
        "POST", "videos", request_id=_request_id(), body=body, content_type=content_type
    )
    return _json_response(_created_video(answer.body))


@bp.get("/videos")
@require_tester
def list_videos() -> Response:
    limit_text = request.args.get("limit", "20")
    if not limit_text.isdigit():
        raise ApiError(
            400, "limit must be an integer between 1 and 100", "invalid_value", param="limit"
        )
    state, principal = current_state(), current_principal()
    with state.store.read() as tx:
        page = tx.videos.page(
            principal.tester_id,
            after=request.args.get("after") or None,
            limit=int(limit_text),
            order=request.args.get("order", "desc"),
        )
    data = []
    for video in page.videos:
        snapshot = video.snapshot
        if video.status not in TERMINAL_STATUSES:
            snapshot = _refresh(video.id)
        data.append(snapshot)
    return _json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


def _refresh(video_id: str) -> dict[str, Any]:
    answer = current_state().upstream.call_json(
        "GET", video_path(video_id), request_id=_request_id()
    )
    with current_state().store.transaction() as tx:
        tx.videos.refresh(video_id, answer.body)
    return answer.body


@bp.get("/videos/<video_id>")
@require_tester
def retrieve_video(video_id: str) -> Response:
    state = current_state()
    with state.store.read() as tx:
        video = tx.videos.owned(video_id, current_principal().tester_id)
        known_status = video.status
    answer = state.upstream.call_json("GET", video_path(video_id), request_id=_request_id())
    # Keep the ledger's snapshot current only when the status moves: polls stay read-only.
    if answer.body.get("status") != known_status:
        with state.store.transaction() as tx:
            tx.videos.refresh(video_id, answer.body)
    return _json_response(answer.body, dict(answer.headers))


@bp.delete("/videos/<video_id>")
@require_tester
def delete_video(video_id: str) -> Response:
    _owned_or_404(video_id)
    state = current_state()
    try:
        answer = state.upstream.call_json("DELETE", video_path(video_id), request_id=_request_id())
    except ApiError as exc:
        if exc.status != 404:
            raise
        answer = None
    with state.store.transaction() as tx:
        tx.videos.mark_deleted(video_id)
    if answer is None:
        raise ApiError(404, f"No video found with id '{video_id}'.", "not_found")
    return _json_response(answer.body)


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
    _owned_or_404(video_id)
    status, headers, chunks = current_state().upstream.open_stream(
        video_path(video_id, "/content"), request_id=_request_id(), params={"variant": variant}
    )
    return Response(chunks, status=status, headers=headers, direct_passthrough=True)


@bp.post("/videos/<video_id>/remix")
@require_tester
def remix_video(video_id: str) -> Response:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("prompt"), str):
        raise ApiError(400, "prompt is required", "missing_required_parameter", param="prompt")
    _owned_or_404(video_id)
    answer = current_state().upstream.call_json(
        "POST",
        video_path(video_id, "/remix"),
        request_id=_request_id(),
        body=json.dumps({"prompt": payload["prompt"]}).encode(),
        content_type="application/json",
    )
    return _json_response(_created_video(answer.body))
