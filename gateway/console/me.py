"""``/console/me``: a tester's own page, signed in with their key — quotas left and when
they reset, held requests with their decisions and reasons, and revoking or rotating the
key (for a tester who exposed it)."""

from __future__ import annotations

from datetime import timedelta

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.access import (
    console_tester,
    for_tester,
    render,
    set_session,
    sign_out,
)
from gateway.console.blueprint import bp
from gateway.console.session import TesterSession, signed_in
from gateway.http.current import current_state
from gateway.tester.me import requests_of
from keys.access.lifecycle import effective_status


def _actor(signed: TesterSession) -> str:
    return f"tester:{signed.tester.id}"


@bp.get("/me")
@for_tester
def me() -> str:
    signed = console_tester()
    store = current_state().store
    with store.read() as tx:
        policy, _ = tx.policies.for_tester(signed.tester.id)
        quotas = tx.quotas.status(signed.tester.id, policy)
        requests = requests_of(tx, signed.tester.id)
        proof_keys = tx.proof_keys.list_for_tester(signed.tester.id)
    return render(
        "me.html",
        key=signed.key,
        status=effective_status(signed.key, store.clock()),
        tester=signed.tester,
        policy=policy,
        quotas=quotas,
        requests=list(reversed(requests)),
        proof_keys=proof_keys,
    )


@bp.post("/me/proof-keys")
@for_tester
def me_bind_proof_key() -> WerkzeugResponse:
    """Bind a pasted public key to the signed-in key. The session ends with it: from now on
    the key string alone (the console's way in) is refused."""
    signed = console_tester()
    with current_state().store.transaction() as tx:
        row = tx.proof_keys.bind(
            signed.key.id,
            request.form.get("public_key", ""),
            _actor(signed),
            tester_id=signed.tester.id,
        )
    sign_out(
        f"Proof key {row.id} is bound to your key {signed.key.hint}: sign every request with "
        "it from now on. The console cannot, so you are signed out."
    )
    return redirect(url_for("console.me_sign_in"))


@bp.post("/me/revoke")
@for_tester
def me_revoke() -> WerkzeugResponse:
    signed = console_tester()
    reason = (request.form.get("reason") or "").strip() or "revoked by its holder"
    with current_state().store.transaction() as tx:
        tx.keys.revoke(signed.key.id, _actor(signed), reason)
    sign_out(f"Your key {signed.key.hint} is revoked; it no longer works anywhere.")
    return redirect(url_for("console.me_sign_in"))


@bp.post("/me/rotate")
@for_tester
def me_rotate() -> str:
    """A new key at once; the old one stops now (no grace: it may have leaked)."""
    signed = console_tester()
    store = current_state().store
    with store.transaction() as tx:
        issued = tx.keys.rotate(signed.key.id, _actor(signed), timedelta(0))
    set_session(signed_in("tester", issued.key.id, store.clock()))
    return render("secret.html", key=issued.key, secret=issued.secret, what="rotated")
