"""Testers and their keys for admins (auditors read): add a tester, issue a key (its secret
shown once), rotate, suspend, resume, revoke with a reason, revoke in bulk; and each key's
blast-radius report."""

from __future__ import annotations

from datetime import timedelta

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.access import console_operator, for_roles, notify, render
from gateway.console.blueprint import bp
from gateway.http.current import current_state
from gateway.http.inputs import parse_time
from gateway.presenters import key_report_view
from keys.access.lifecycle import IssuedKey, effective_status
from keys.access.roles import ADMIN, RECORD_READERS
from keys.errors import InvalidInput
from keys.limits.cohorts import DEFAULT_COHORT

KEY_ACTIONS = ("suspend", "resume", "revoke")


def _form(name: str) -> str:
    return (request.form.get(name) or "").strip()


@bp.get("/testers")
@for_roles(*RECORD_READERS)
def testers() -> str:
    store = current_state().store
    now = store.clock()
    with store.read() as tx:
        rows = [
            (tester, [(key, effective_status(key, now)) for key in tx.keys.list(tester.id)])
            for tester in tx.testers.list()
        ]
        cohorts = sorted(tx.policies.cohorts())
    return render("testers.html", rows=rows, cohorts=cohorts)


@bp.post("/testers")
@for_roles(ADMIN)
def add_tester() -> WerkzeugResponse:
    with current_state().store.transaction() as tx:
        tester = tx.testers.add(
            _form("name"),
            _form("email"),
            console_operator().actor,
            cohort=_form("cohort") or DEFAULT_COHORT,
        )
    notify(f"Added {tester.name} ({tester.id}).")
    return redirect(url_for("console.testers"))


def _show_secret(issued: IssuedKey, what: str) -> str:
    """The one page that ever shows a key's secret."""
    return render("secret.html", key=issued.key, secret=issued.secret, what=what)


@bp.post("/testers/<tester_id>/keys")
@for_roles(ADMIN)
def issue_key(tester_id: str) -> str:
    with current_state().store.transaction() as tx:
        issued = tx.keys.issue(tester_id, actor=console_operator().actor)
    return _show_secret(issued, "issued")


@bp.post("/keys/<key_id>/rotate")
@for_roles(ADMIN)
def rotate_key(key_id: str) -> str:
    state = current_state()
    grace_text = _form("grace_seconds") or str(state.settings.rotation_grace_seconds)
    if not (grace_text.isascii() and grace_text.isdigit()):
        raise InvalidInput("grace_seconds must be a whole number of seconds", param="grace")
    with state.store.transaction() as tx:
        issued = tx.keys.rotate(
            key_id, console_operator().actor, timedelta(seconds=int(grace_text))
        )
    return _show_secret(issued, "rotated")


@bp.post("/keys/<key_id>/<action>")
@for_roles(ADMIN)
def change_key(key_id: str, action: str) -> WerkzeugResponse:
    if action not in KEY_ACTIONS:
        raise InvalidInput(f"unknown action {action[:20]!r}", param="action")
    actor, reason = console_operator().actor, _form("reason")
    with current_state().store.transaction() as tx:
        if action == "revoke":
            tx.keys.revoke(key_id, actor, reason)
        elif action == "suspend":
            tx.keys.suspend(key_id, actor, reason)
        else:
            tx.keys.resume(key_id, actor, reason or None)
    past = {"revoke": "Revoked", "suspend": "Suspended", "resume": "Resumed"}[action]
    notify(f"{past} {key_id}.")
    return redirect(url_for("console.testers"))


@bp.post("/keys/revoke")
@for_roles(ADMIN)
def revoke_in_bulk() -> WerkzeugResponse:
    cohort, before = _form("cohort") or None, _form("issued_before")
    if request.form.get("confirm") != "yes":
        raise InvalidInput("tick the box to confirm a bulk revocation", param="confirm")
    with current_state().store.transaction() as tx:
        revoked = tx.keys.revoke_matching(
            console_operator().actor,
            _form("reason"),
            cohort=cohort,
            issued_before=parse_time(before, "issued_before", tx.clock()) if before else None,
        )
    notify(f"Revoked {len(revoked)} key{'s' if len(revoked) != 1 else ''}.")
    return redirect(url_for("console.testers"))


@bp.get("/keys/<key_id>/report")
@for_roles(*RECORD_READERS)
def key_report(key_id: str) -> str:
    store = current_state().store
    with store.read() as tx:
        key = tx.keys.get(key_id)
        report = key_report_view(tx.usage_reports.key_report(key_id, None, None))
        status = effective_status(key, store.clock())
    return render("key_report.html", key=key, status=status, report=report)
