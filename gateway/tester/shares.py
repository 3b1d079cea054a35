"""Sharing: a tester asks to publish a video, an approver decides, and an approved share
gets an expiring, signed public link ``/s/<token>`` that streams the content without a key
(the rules: gateway/services/sharing.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from gateway.http.auth import current_principal, require_tester
from gateway.http.current import current_state
from gateway.http.errors import ApiError
from gateway.services import sharing
from gateway.services.provenance import Recipient, share_link_id
from gateway.tester.videos import stream_content
from gateway.upstream.client import CONTENT_VARIANTS
from keys.models import Approval

bp = Blueprint("shares", __name__)


def share_view(approval: Approval) -> dict[str, Any]:
    state = current_state()
    now = state.store.clock()
    status = approval.status
    url = None
    if status == "approved" and approval.expires_at is not None:
        if approval.expires_at <= now:
            status = "expired"
        else:
            token = state.share_links.token(approval.id, approval.expires_at)
            base = state.settings.public_url or request.host_url
            url = f"{base.rstrip('/')}/s/{token}"
    return {
        "id": approval.id,
        "object": "video.share",
        "video_id": approval.video_id,
        "status": status,
        "url": url,
        "expires_at": int(approval.expires_at.timestamp()) if approval.expires_at else None,
        "reason": approval.decision_reason or approval.held_because,
    }


@bp.post("/v1/videos/<video_id>/share")
@require_tester
def request_share(video_id: str) -> Response:
    return jsonify(
        share_view(sharing.request_share(current_state(), current_principal(), video_id))
    )


@bp.get("/v1/videos/<video_id>/share")
@require_tester
def share_status(video_id: str) -> Response:
    return jsonify(share_view(sharing.share_status(current_state(), current_principal(), video_id)))


@bp.get("/s/<token>")
def shared_content(token: str) -> Response:
    """The public side of a share: no key, a valid signed token, an approval still in force."""
    variant = request.args.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        raise ApiError(400, "unknown variant", "invalid_value", param="variant")
    shared = sharing.shared_video(current_state(), token)
    link_id = share_link_id(token)
    recipient = Recipient(
        "share", f"share:{link_id}", share_link_id=link_id, approval_id=shared.approval_id
    )
    return stream_content(shared.upstream_id, shared.video_id, recipient, variant)
