"""The approver's queue: held generations, share requests and downloads, oldest first, with
what was asked and the rule that held it; the video playing inline (streamed through the
gateway); approve or reject in one click; the decision history."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, redirect, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.access import console_operator, for_roles, notify, render
from gateway.console.blueprint import bp
from gateway.http.current import current_context, current_state
from gateway.services.approvals import decide
from gateway.services.provenance import Recipient
from gateway.tester.videos import stream_content
from gateway.upstream.client import CONTENT_VARIANTS
from keys.access.roles import ANY_ROLE, APPROVAL_DECIDERS
from keys.approvals.decisions import MAX_LIST
from keys.models import Approval, Tester
from keys.store import Transaction

HISTORY = 50


def _testers(tx: Transaction, approvals: list[Approval]) -> dict[str, Tester]:
    return {tester_id: tx.testers.get(tester_id) for tester_id in {a.tester_id for a in approvals}}


def _item(approval: Approval, testers: dict[str, Tester]) -> dict[str, Any]:
    tester = testers[approval.tester_id]
    asked = approval.request or {}
    return {
        "approval": approval,
        "tester": tester,
        "prompt": asked.get("prompt"),
        "details": {
            name: asked[name]
            for name in ("model", "size", "seconds")
            if asked.get(name) is not None
        },
        # A held generation has not run yet: there is only its prompt to judge.
        "has_video": approval.kind != "generation",
    }


@bp.get("/approvals")
@for_roles(*ANY_ROLE)
def approvals() -> str:
    with current_state().store.read() as tx:
        pending = tx.approvals.list("pending", limit=MAX_LIST)
        decided = [
            a
            for a in tx.approvals.list(limit=HISTORY * 2, newest_first=True)
            if a.status != "pending"
        ][:HISTORY]
        testers = _testers(tx, pending + decided)
        queue = [_item(a, testers) for a in pending]
        history = [_item(a, testers) for a in decided]
    return render("approvals.html", queue=queue, history=history)


@bp.post("/approvals/<approval_id>/decide")
@for_roles(*APPROVAL_DECIDERS)
def decide_approval(approval_id: str) -> WerkzeugResponse:
    verdict = request.form.get("decision")
    if verdict not in ("approve", "reject"):
        abort(400)
    approve = verdict == "approve"
    view = decide(
        current_state(),
        approval_id,
        approve,
        console_operator().actor,
        request.form.get("reason"),
        current_context().request_id,
    )
    what = {"generation": "generation", "share": "share request", "download": "download"}
    notify(
        f"{'Approved' if approve else 'Rejected'} the {what[view['kind']]} {approval_id}"
        + (" and sent it to the backend." if approve and view["kind"] == "generation" else ".")
    )
    return redirect(url_for("console.approvals"))


@bp.get("/approvals/<approval_id>/content")
@for_roles(*ANY_ROLE)
def approval_content(approval_id: str) -> Response:
    """The video (or its thumbnail) an approver is asked about, streamed through the gateway:
    the backend's URL and credential never reach the browser."""
    variant = request.args.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        abort(400)
    with current_state().store.read() as tx:
        approval = tx.approvals.get(approval_id)
        upstream_id = tx.videos.upstream_id(approval.video_id, approval.tester_id)
    if upstream_id is None:
        abort(404)
    recipient = Recipient(
        "preview", f"console:{console_operator().actor}"[:200], approval_id=approval.id
    )
    return stream_content(upstream_id, approval.video_id, recipient, variant)
