"""The program's switches and what went wrong: lockdown (the kill switch), cohort policies,
and incidents (keys revoked because they leaked, keys suspended by the anomaly rules)."""

from __future__ import annotations

import json
from typing import Any

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.access import console_operator, for_roles, notify, render
from gateway.console.blueprint import bp
from gateway.http.current import current_state
from keys.access.roles import ADMIN, ANY_ROLE, RECORD_READERS
from keys.access.testers import COHORT_NAME
from keys.errors import InvalidInput
from keys.limits.cohorts import DEFAULT_COHORT
from keys.limits.policies import PolicyError, policy_from_mapping

INCIDENTS_SHOWN = 200


@bp.get("/lockdown")
@for_roles(*ANY_ROLE)
def lockdown() -> str:
    with current_state().store.read() as tx:
        program = tx.lockdown.state()
        return render("lockdown.html", program=program)


@bp.post("/lockdown")
@for_roles(ADMIN)
def set_lockdown() -> WerkzeugResponse:
    on = request.form.get("lockdown") == "on"
    if request.form.get("confirm") != "yes":
        raise InvalidInput("tick the box to confirm", param="confirm")
    with current_state().store.transaction() as tx:
        tx.lockdown.set_lockdown(
            on, console_operator().actor, (request.form.get("reason") or "").strip()
        )
    notify(
        "Lockdown is ON: every tester request is refused."
        if on
        else "Lockdown is off: testers' keys work again."
    )
    return redirect(url_for("console.lockdown"))


@bp.get("/cohorts")
@for_roles(*ANY_ROLE)
def cohorts() -> str:
    with current_state().store.read() as tx:
        stored = tx.policies.cohorts()
        # Cohorts testers are in, and "default", have a policy even when none is stored.
        names = {DEFAULT_COHORT, *stored, *(tester.cohort for tester in tx.testers.list())}
        policies = {
            name: (
                json.dumps((stored.get(name) or tx.policies.policy(name)).to_json(), indent=2),
                name in stored,
            )
            for name in sorted(names)
        }
    return render("cohorts.html", policies=policies)


@bp.post("/cohorts")
@for_roles(ADMIN)
def set_cohort_policy() -> WerkzeugResponse:
    cohort = (request.form.get("cohort") or "").strip()
    if not COHORT_NAME.fullmatch(cohort):
        raise InvalidInput("cohort must be lowercase letters, digits, - or _", param="cohort")
    try:
        raw: Any = json.loads(request.form.get("policy") or "")
    except ValueError as exc:
        raise InvalidInput(f"the policy is not valid JSON: {exc}", param="policy") from None
    if not isinstance(raw, dict):
        raise InvalidInput("the policy must be a JSON object", param="policy")
    try:
        policy = policy_from_mapping(raw)
    except PolicyError as exc:
        raise InvalidInput(str(exc), param=exc.field) from None
    with current_state().store.transaction() as tx:
        changed = tx.policies.set_policy(cohort, policy, console_operator().actor)
    notify(f"Saved the policy of {cohort}." if changed else f"{cohort}'s policy was unchanged.")
    return redirect(url_for("console.cohorts"))


@bp.get("/incidents")
@for_roles(*RECORD_READERS)
def incidents() -> str:
    """Leaked keys revoked and keys the anomaly rules stopped, newest first."""
    with current_state().store.read() as tx:
        entries = [
            entry
            for entry in tx.audit.latest(INCIDENTS_SHOWN, ("key.revoke", "anomaly.detected"))
            if entry.action == "anomaly.detected" or (entry.details or {}).get("cause") == "leak"
        ]
    return render("incidents.html", entries=entries)
