"""Who is using the console, checked on every request, and what each role is shown.

The session cookie only names a credential (``session.py``); here the credential is looked
up again each time, so a revoked or expired admin token, or a revoked, suspended or expired
tester key, is signed out by its very next request. The roles' rights are the admin API's:
a page or button a role may not use is not rendered, and its route refuses it anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from gateway.console.blueprint import bp
from gateway.console.session import (
    COOKIE,
    COOKIE_PATH,
    SESSION_PURPOSE,
    ConsoleSession,
    SessionCodec,
    TesterSession,
    anonymous,
)
from gateway.http.current import current_context, current_state
from keys.access.admin_tokens import Operator
from keys.access.lifecycle import REFUSAL_MESSAGES, refusal
from keys.access.roles import ADMIN, ANY_ROLE, APPROVAL_DECIDERS, APPROVER, RECORD_READERS
from keys.errors import InvalidKey, KeyRejected, NotFound

P = ParamSpec("P")
R = TypeVar("R")

_CODEC = "drawbridge_console_codec"
# Pages of the operator console: (endpoint, label, roles that see it).
PAGES = (
    ("console.approvals", "Approvals", ANY_ROLE),
    ("console.testers", "Testers & keys", RECORD_READERS),
    ("console.incidents", "Incidents", RECORD_READERS),
    ("console.cohorts", "Cohorts", ANY_ROLE),
    ("console.usage", "Usage", RECORD_READERS),
    ("console.audit", "Audit trail", RECORD_READERS),
    ("console.lockdown", "Lockdown", ANY_ROLE),
)
HOME_BY_ROLE = {ADMIN: "console.approvals", APPROVER: "console.approvals"}
HOME_DEFAULT = "console.usage"


def codec() -> SessionCodec:
    """The session codec of this app (its key is derived from the vault once)."""
    found: SessionCodec | None = current_app.extensions.get(_CODEC)
    if found is None:
        found = SessionCodec(current_state().vault.derive(SESSION_PURPOSE))
        current_app.extensions[_CODEC] = found
    return found


def console_session() -> ConsoleSession:
    """The browser's session; an anonymous one when the request was refused before its
    cookie was read (a path trick, an oversized body)."""
    session = current_context().console_session
    if session is None:
        session = anonymous(current_state().store.clock())
        set_session(session)
    return session


def set_session(session: ConsoleSession) -> None:
    current_context().console_session = session


def sign_out(notice: str = "") -> None:
    set_session(replace(anonymous(current_state().store.clock()), notice=notice))


def notify(message: str) -> None:
    """A message shown once, on the next page."""
    set_session(replace(console_session(), notice=message))


_STATIC = "console.static"


@bp.before_request
def _load_session() -> WerkzeugResponse | tuple[str, int] | None:
    if request.endpoint == _STATIC:
        return None  # the stylesheet and script neither need nor renew a session
    now = current_state().store.clock()
    session = codec().loads(request.cookies.get(COOKIE), now)
    if session is None:
        session = anonymous(now)
    set_session(session)
    if request.method not in ("GET", "HEAD") and not codec().csrf_ok(
        session, request.form.get("csrf_token")
    ):
        return refusal_page(
            403,
            "This form has expired or did not come from the console. Reload the page and "
            "try again.",
        )
    return None


@bp.after_request
def _write_session(response: WerkzeugResponse) -> WerkzeugResponse:
    if request.endpoint == _STATIC:
        return response
    session = current_context().console_session
    if session is not None:
        now = int(current_state().store.clock().timestamp())
        response.set_cookie(
            COOKIE,
            codec().dumps(replace(session, seen=now)),
            path=COOKIE_PATH,
            httponly=True,
            secure=_behind_tls(),
            samesite="Strict",
        )
    # Pages may show a secret once and hold decisions: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _behind_tls() -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a trusted proxy)."""
    if request.is_secure:
        return True
    if not current_state().settings.trusted_proxies:
        return False
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip()
    return forwarded.lower() == "https"


def current_operator() -> Operator | None:
    """The operator of a signed-in console session, verified now; None otherwise."""
    session = console_session()
    if session.kind != "operator":
        return None
    try:
        with current_state().store.read() as tx:
            operator = tx.tokens.operator(session.subject)
    except (InvalidKey, KeyRejected) as exc:
        sign_out(f"You were signed out: {exc.message}")
        return None
    current_context().operator = operator  # the access log names the operator's token id
    return operator


def current_tester() -> TesterSession | None:
    """The tester of a signed-in ``/console/me`` session, their key verified now."""
    session = console_session()
    if session.kind != "tester":
        return None
    store = current_state().store
    with store.read() as tx:
        try:
            key = tx.keys.get(session.subject)
            tester = tx.testers.get(key.tester_id)
        except NotFound:
            sign_out("You were signed out: the key is unknown.")
            return None
        # The rule that refuses the key on the API signs it out of the console.
        code = refusal(key.status, key.expires_at, key.grace_until, tester.status, store.clock())
        bound = tx.proof_keys.in_force(key.id) is not None
    if code is not None:
        sign_out(f"You were signed out: {REFUSAL_MESSAGES[code]}")
        return None
    if bound:
        sign_out(
            "You were signed out: this key is now bound to a proof key, and the console "
            "cannot sign requests with it. Use the API with your proof key."
        )
        return None
    return TesterSession(key, tester)


def refusal_page(status: int, message: str) -> tuple[str, int]:
    return render("error.html", status=status, message=message), status


def for_roles(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R | Any]]:
    """Run the view only for a signed-in operator of one of ``roles`` (``console_operator()``).

    Anyone else is sent to the sign-in page; another role gets a 403 page."""

    def decorate(view: Callable[P, R]) -> Callable[P, R | Any]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Any:
            operator = current_operator()
            if operator is None:
                return redirect(url_for("console.sign_in"))
            if operator.role not in roles:
                return refusal_page(
                    403,
                    f"This needs the role {' or '.join(roles)}; you are signed in as "
                    f"{operator.role}.",
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate


def for_tester(view: Callable[P, R]) -> Callable[P, R | Any]:
    """Run the view only for a tester signed in with a usable key (``console_tester()``)."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Any:
        signed_in = current_tester()
        if signed_in is None:
            return redirect(url_for("console.me_sign_in"))
        current_context().tester_session = signed_in
        return view(*args, **kwargs)

    return wrapper


def console_operator() -> Operator:
    """The operator a ``for_roles`` view runs for."""
    operator = current_context().operator
    assert operator is not None, "console_operator() outside a @for_roles view"
    return operator


def console_tester() -> TesterSession:
    """The tester a ``for_tester`` view runs for."""
    tester = current_context().tester_session
    assert tester is not None, "console_tester() outside a @for_tester view"
    return tester


@bp.app_template_filter("console_time")
def console_time(value: datetime | str | None) -> str:
    """A time as people read it on a page: ``2026-12-04 14:05 UTC`` (empty when unknown)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def may(*roles: str) -> bool:
    """Whether the signed-in operator has one of ``roles`` (templates hide what they may not)."""
    operator = current_context().operator
    return operator is not None and operator.role in roles


def render(template: str, **context: Any) -> str:
    """A console page, with the navigation, CSRF token and one-time notice filled in."""
    session = console_session()
    operator = current_context().operator
    notice = session.notice
    if notice:
        set_session(replace(session, notice=""))
    pages = [
        (endpoint, label)
        for endpoint, label, roles in PAGES
        if operator is not None and operator.role in roles
    ]
    return render_template(
        template,
        csrf_token=codec().csrf_token(session),
        operator=operator,
        tester_session=current_context().tester_session,
        pages=pages,
        notice=notice,
        may=may,
        ADMIN=ADMIN,
        APPROVAL_DECIDERS=APPROVAL_DECIDERS,
        **context,
    )
