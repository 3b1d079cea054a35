"""Signing in with an admin token (operators) or a tester key (``/console/me``), and out.

The pasted secret is verified by the same services as a Bearer header on the API, counts
against the same failed-authentication limit, and is then forgotten: the session names only
the credential's id.
"""

from __future__ import annotations

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.access import (
    HOME_BY_ROLE,
    HOME_DEFAULT,
    current_operator,
    current_tester,
    refusal_page,
    render,
    set_session,
    sign_out,
)
from gateway.console.blueprint import bp
from gateway.console.session import signed_in
from gateway.http.current import current_state
from keys.errors import HoneytokenUsed, InvalidKey, KeyRejected

PROOF_BOUND_MESSAGE = (
    "this key is bound to a proof key, so its string alone is refused everywhere, the "
    "console included. Use the API with your proof key (docs/proof-of-possession.md)."
)


def _pasted_secret() -> str:
    return (request.form.get("secret") or "").strip()


def _refuse(message: str) -> tuple[str, int]:
    current_state().limits.record_auth_failure(request.remote_addr or "unknown")
    return refusal_page(401, message)


@bp.get("/")
def home() -> WerkzeugResponse:
    operator = current_operator()
    if operator is None:
        return redirect(url_for("console.sign_in"))
    return redirect(url_for(HOME_BY_ROLE.get(operator.role, HOME_DEFAULT)))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> WerkzeugResponse | str | tuple[str, int]:
    if request.method == "GET":
        if current_operator() is not None:
            return redirect(url_for("console.home"))
        return render("sign_in.html")
    state = current_state()
    # A blocked address gets the 429 page from the console's error handler (console/errors.py).
    state.limits.refuse_blocked_client(request.remote_addr or "unknown")
    try:
        with state.store.read() as tx:
            operator = tx.tokens.verify(_pasted_secret())
    except (InvalidKey, KeyRejected) as exc:
        return _refuse(f"Not signed in: {exc.message}")
    set_session(signed_in("operator", operator.token_id, state.store.clock()))
    return redirect(url_for(HOME_BY_ROLE.get(operator.role, HOME_DEFAULT)))


@bp.route("/me/sign-in", methods=["GET", "POST"])
def me_sign_in() -> WerkzeugResponse | str | tuple[str, int]:
    if request.method == "GET":
        if current_tester() is not None:
            return redirect(url_for("console.me"))
        return render("me_sign_in.html")
    state = current_state()
    # A blocked address gets the 429 page from the console's error handler (console/errors.py).
    state.limits.refuse_blocked_client(request.remote_addr or "unknown")
    try:
        with state.store.read() as tx:
            principal = tx.keys.verify(_pasted_secret())
    except HoneytokenUsed as exc:
        state.anomalies.honeytoken_used(exc, request.remote_addr or "unknown")
        return _refuse(f"Not signed in: {exc.message}")
    except (InvalidKey, KeyRejected) as exc:
        return _refuse(f"Not signed in: {exc.message}")
    if principal.proof_key is not None:
        # The string alone opens nothing, the console included: a browser cannot sign.
        return _refuse(f"Not signed in: {PROOF_BOUND_MESSAGE}")
    set_session(signed_in("tester", principal.key_id, state.store.clock()))
    return redirect(url_for("console.me"))


@bp.post("/sign-out")
def sign_out_view() -> WerkzeugResponse:
    was_tester = current_tester() is not None
    sign_out("You are signed out.")
    return redirect(url_for("console.me_sign_in" if was_tester else "console.sign_in"))
