"""Sharing: a tester asks to publish a video, an approver decides (services/approvals.py),
and an approved share opens an expiring, signed public link to the content.

A link stops with what stands behind it: the kill switch, the tester, the key, the
approval's time. Every refusal of a link is the same "not valid" (a stranger holding one
learns nothing about why), except a lockdown, which says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.upstream.client import video_path
from keys.access.lifecycle import Principal
from keys.errors import Forbidden, InvalidShareLink, Lockdown, NotFound, NotReady
from keys.models import ApiKey, Approval, Tester

if TYPE_CHECKING:
    from gateway.state import GatewayState


def request_share(state: GatewayState, principal: Principal, video_id: str) -> Approval:
    """The video's share request in force, held for an approver when there is none.

    Raises Forbidden (the cohort does not share), NotFound, NotReady (not completed).
    """
    if principal.policy.sharing == "off":
        raise Forbidden("Sharing is not available to your cohort.", code="policy_violation")
    video_path(video_id)  # an id that cannot be a video's is a 404 before any query
    store = state.store
    with store.transaction() as tx:
        video = tx.videos.owned(video_id, principal.tester_id)
        if video.status != "completed":
            raise NotReady("Only a completed video can be shared.", code="video_not_ready")
        latest = tx.approvals.latest(video_id, "share")
        if latest is None or not _in_force(latest, store.clock()):
            latest = tx.approvals.hold(
                "share",
                principal.tester_id,
                principal.key_id,
                video_id,
                "Public sharing is reviewed before a link is issued.",
            )
        return latest


def share_status(state: GatewayState, principal: Principal, video_id: str) -> Approval:
    """The video's latest share request. Raises NotFound (no such video, or no request)."""
    video_path(video_id)  # an id that cannot be a video's is a 404 before any query
    with state.store.read() as tx:
        tx.videos.owned(video_id, principal.tester_id)
        latest = tx.approvals.latest(video_id, "share")
        if latest is None:
            raise NotFound(f"Video '{video_id}' has no share request.")
        return latest


@dataclass(frozen=True)
class SharedVideo:
    """What a share link opens: the backend's id, the gateway's, and the share approval."""

    upstream_id: str
    video_id: str
    approval_id: str


def shared_video(state: GatewayState, token: str) -> SharedVideo:
    """The video a share link opens.

    Raises InvalidShareLink, ShareLinkExpired or Lockdown.
    """
    now = state.store.clock()
    link = state.share_links.verify(token, now)
    with state.store.read() as tx:
        approval = tx.session.get(Approval, link.approval_id)
        if approval is None or approval.kind != "share" or approval.status != "approved":
            raise InvalidShareLink("This share link is not valid.")
        if approval.expires_at is None or approval.expires_at <= now:
            raise InvalidShareLink("This share link is no longer valid.")
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
    return SharedVideo(upstream_id, approval.video_id, approval.id)


def _in_force(share: Approval, now: datetime) -> bool:
    """A share request still pending, or approved and not yet expired."""
    if share.status == "pending":
        return True
    return share.status == "approved" and (share.expires_at is None or share.expires_at > now)
