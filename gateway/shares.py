"""Sharing: a tester asks to publish a video, an approver decides, and an approved share
gets an expiring, signed public link ``/s/<token>`` that streams the content without a key."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from gateway.auth import current_principal, require_tester
from gateway.current import current_state
from gateway.errors import ApiError
from gateway.upstream import CONTENT_VARIANTS, video_path
from gateway.videos import stream_content
from keys.errors import InvalidShareLink, Lockdown
from keys.models import ApiKey, Approval, Tester

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
    principal = current_principal()
    if principal.policy.sharing == "off":
        raise ApiError(403, "Sharing is not available to your cohort.", "policy_violation")
    video_path(video_id)
    store = current_state().store
    with store.transaction() as tx:
        video = tx.videos.owned(video_id, principal.tester_id)
        if video.status != "completed":
            raise ApiError(400, "Only a completed video can be shared.", "video_not_ready")
        latest = tx.approvals.latest(video_id, "share")
        live = latest is not None and (
            latest.status == "pending"
            or (latest.status == "approved" and share_view(latest)["status"] == "approved")
        )
        if latest is None or not live:
            latest = tx.approvals.hold(
                "share",
                principal.tester_id,
                principal.key_id,
                video_id,
                "Public sharing is reviewed before a link is issued.",
            )
        return jsonify(share_view(latest))


@bp.get("/v1/videos/<video_id>/share")
@require_tester
def share_status(video_id: str) -> Response:
    principal = current_principal()
    video_path(video_id)
    with current_state().store.read() as tx:
        tx.videos.owned(video_id, principal.tester_id)
        latest = tx.approvals.latest(video_id, "share")
        if latest is None:
            raise ApiError(404, f"Video '{video_id}' has no share request.", "not_found")
        return jsonify(share_view(latest))


@bp.get("/s/<token>")
def shared_content(token: str) -> Response:
    """The public side of a share: no key, a valid signed token, an approval still in force."""
    state = current_state()
    variant = request.args.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        raise ApiError(400, "unknown variant", "invalid_value", param="variant")
    link = state.share_links.verify(token, state.store.clock())
    with state.store.read() as tx:
        approval = tx.session.get(Approval, link.approval_id)
        if approval is None or approval.kind != "share" or approval.status != "approved":
            raise InvalidShareLink("This share link is not valid.")
        if approval.expires_at is None or approval.expires_at <= state.store.clock():
            raise InvalidShareLink("This share link is no longer valid.")
        # A link stops with what stands behind it: the kill switch, the tester, the key.
        if tx.lockdown.state().lockdown:
            raise Lockdown("The program is locked down; shared links are paused.")
        key = tx.session.get(ApiKey, approval.key_id)
        tester = tx.session.get(Tester, approval.tester_id)
        if (
            key is None
            or key.status in ("revoked", "suspended")
            or (tester is None or tester.status != "active")
        ):
            raise InvalidShareLink("This share link is no longer valid.")
        upstream_id = tx.videos.upstream_id(approval.video_id, approval.tester_id)
    if upstream_id is None:
        raise InvalidShareLink("This share link is not valid.")
    return stream_content(upstream_id, variant)
