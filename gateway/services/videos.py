"""A tester's videos: read, list, delete and download, through the backend.

Upstream, every video belongs to the master credential; the gateway's ledger says whose
each one is, and a held generation is a video with no upstream id until an approver
decides. The callers have checked ownership already (gateway/http/auth.py ``requested_video``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gateway.services.provenance import Recipient, open_delivery
from gateway.upstream.client import POLL_AFTER_HEADER, UpstreamError, timed_call, video_path
from keys.access.gate import VideoRef
from keys.access.lifecycle import Principal
from keys.errors import Forbidden, NotFound, NotReady
from keys.generations.ledger import present
from keys.generations.videos import TERMINAL_STATUSES
from keys.models import Video
from keys.provenance.content_cache import entry_name

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.state import GatewayState

# How often clients are asked to poll a video an approver has not decided on yet.
HELD_POLL_AFTER_MS = "2000"


def current_video(
    state: GatewayState, context: RequestContext, video: Video | VideoRef
) -> tuple[dict[str, Any], dict[str, str]]:
    """The video as the tester sees it now, and the backend's headers worth passing on
    (its poll interval). Asks the backend unless the video is held; records a status
    change in the ledger."""
    if video.upstream_id is None:
        return dict(video.snapshot), {POLL_AFTER_HEADER: HELD_POLL_AFTER_MS}
    answer = timed_call(state.upstream, context, "GET", video_path(video.upstream_id))
    body = present(answer.body, video.id, video.snapshot.get("remixed_from_video_id"))
    # Polls stay read-only until the status moves.
    if body.get("status") != video.status:
        with state.store.transaction() as tx:
            tx.generations.observe(video.id, body)
    return body, dict(answer.headers)


def list_videos(
    state: GatewayState,
    context: RequestContext,
    tester_id: str,
    *,
    after: str | None,
    limit: int,
    order: str,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the tester's videos, each as it is now, and whether more follow."""
    with state.store.read() as tx:
        page = tx.videos.page(tester_id, after=after, limit=limit, order=order)
    data = [
        dict(video.snapshot)
        if video.status in TERMINAL_STATUSES
        else current_video(state, context, video)[0]
        for video in page.videos
    ]
    return data, page.has_more


def delete_video(state: GatewayState, context: RequestContext, video: VideoRef) -> None:
    """Delete the video upstream (if it ever ran) and in the ledger.

    Raises NotFound when the backend had lost it already (it is forgotten here too), and
    UpstreamError when the backend failed.
    """
    lost = False
    if video.upstream_id is not None:
        try:
            timed_call(state.upstream, context, "DELETE", video_path(video.upstream_id))
        except NotFound:
            lost = True  # an id the backend could never serve: as good as gone
        except UpstreamError as exc:
            if exc.status != 404:
                raise
            lost = True  # already gone upstream: forget it here too, and say so
    with state.store.transaction() as tx:
        tx.generations.deleted(video.id, ran=video.upstream_id is not None)
    if video.upstream_id is not None:
        # Its bytes kept on this host for repeat deliveries go too (other hosts' on their
        # next attempt: the backend's 404, or eviction).
        state.content_cache.discard(entry_name(video.upstream_id, "video"))
    if lost:
        raise NotFound(f"No video found with id '{video.id}'.")


def open_content(
    state: GatewayState,
    context: RequestContext,
    principal: Principal,
    video: VideoRef,
    variant: str,
    on_deadline: Callable[[], None] | None,
) -> tuple[int, dict[str, str], Iterator[bytes]]:
    """Open a download of the video's content: status, headers and the body's chunks.

    Raises NotReady for a held video, Forbidden while the cohort's download review has not
    approved it, and UpstreamError.
    """
    if video.upstream_id is None:
        raise not_ready(video.id)
    if principal.policy.content_requires_approval:
        _require_download_approval(state, principal, video.id)
    recipient = Recipient(
        "download", f"key:{principal.key_id}", downloading_key_id=principal.key_id
    )
    return open_delivery(
        state, context, video.upstream_id, video.id, recipient, variant, on_deadline
    )


def not_ready(video_id: str) -> NotReady:
    return NotReady(
        f"Video '{video_id}' is not ready: it is waiting for an approver's decision.",
        code="video_not_ready",
    )


def _require_download_approval(state: GatewayState, principal: Principal, video_id: str) -> None:
    """In cohorts that review downloads, only an approved request lets the content out."""
    with state.store.transaction() as tx:
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
            raise Forbidden(
                f"Download rejected by a reviewer: {approval.decision_reason}",
                code="approval_rejected",
            )
    raise Forbidden(
        f"Downloading this video needs an approver's decision (request {approval.id} is "
        "pending); GET /v1/me lists its status.",
        code="approval_required",
    )
