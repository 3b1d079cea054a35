"""Who is calling: tester keys on ``/v1``, admin tokens on ``/admin/v1``.

The edge's half of admission: read what the request presents, hand it to
gateway/services/admission.py, and keep the answer in the request's context. Keys are
accepted in ``Authorization: Bearer`` only; a key in a URL is refused rather than served.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import quote

from gateway.http.current import current_context, current_request, current_state
from gateway.services.admission import Attempt, admit_operator, admit_tester
from gateway.upstream.client import VIDEO_ID
from keys.access.admin_tokens import Operator
from keys.access.gate import VideoRef
from keys.access.lifecycle import Principal
from keys.access.proofs import SignedRequest
from keys.errors import NotFound

P = ParamSpec("P")
R = TypeVar("R")

# Set on a view whose first step is ``admit_tester``: nothing the view does comes before the
# key's admission, so a refusal there may be answered before Flask (gateway/fast_refusal.py).
ADMITS_TESTER_FIRST = "drawbridge_admits_tester_first"


def admits_tester_first(view: Callable[..., object] | None) -> bool:
    """Whether ``view`` is a ``require_tester`` view (admission is the first thing it does)."""
    return bool(getattr(view, ADMITS_TESTER_FIRST, False))


def _attempt(*, before_proof: bool = False) -> Attempt:
    incoming = current_request()
    video_id = (incoming.view_args or {}).get("video_id")
    return Attempt(
        authorization=incoming.headers.get("Authorization"),
        client_ip=incoming.remote_addr or "unknown",
        query=tuple(incoming.args.items(multi=True)) if incoming.query_string else (),
        video_id=video_id if isinstance(video_id, str) and VIDEO_ID.fullmatch(video_id) else None,
        signed_request=_signed_request,
        before_proof=before_proof,
    )


def _signed_request() -> SignedRequest:
    """The request as a proof covers it: the target exactly as sent (gunicorn's
    ``RAW_URI``, before any decoding), the header lines, and the body, read once within
    the request-size limit and kept for the view."""
    incoming = current_request()
    environ = incoming.environ
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(target, str) or not target.startswith("/"):
        target = quote(environ.get("PATH_INFO", "/"), safe="/%:@!$&'()*+,;=~-._")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
    host = incoming.headers.get("Host") or environ.get("SERVER_NAME", "localhost")
    return SignedRequest(
        method=incoming.method,
        url=f"{environ.get('wsgi.url_scheme', 'http')}://{host}{target}",
        headers=tuple(incoming.headers.items()),
        body=incoming.get_data(cache=True),
    )


def admit_current_tester() -> Principal:
    """Admit this request's tester key (``admit_tester``). Raises what that raises."""
    return admit_tester(current_state(), _attempt(), current_context())


def require_tester(view: Callable[P, R]) -> Callable[P, R]:
    """Run the view only for an admitted tester key (``current_principal()``)."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        admit_current_tester()
        return view(*args, **kwargs)

    setattr(wrapper, ADMITS_TESTER_FIRST, True)
    return wrapper


def require_tester_before_proof(view: Callable[P, R]) -> Callable[P, R]:
    """``require_tester`` for what a key may do before it has a proof key: its own status,
    listing and binding proof keys (how it gets one), revoking itself. Where the policy
    requires a proof, a key with no proof key bound may still call these; a key with one
    bound must prove possession here as everywhere."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        admit_tester(current_state(), _attempt(before_proof=True), current_context())
        return view(*args, **kwargs)

    setattr(wrapper, ADMITS_TESTER_FIRST, True)
    return wrapper


def current_principal() -> Principal:
    principal = current_context().principal
    assert principal is not None, "current_principal() outside a @require_tester view"
    return principal


def requested_video(video_id: str) -> VideoRef:
    """The caller's video named in the URL, read with the key at admission.

    Raises NotFound for a video that does not exist, was deleted, or is someone else's: the
    three are indistinguishable on purpose.
    """
    context = current_context()
    video, principal = context.video, context.principal
    if (
        video is None
        or principal is None
        or video.id != video_id
        or not video.visible_to(principal.tester_id)
    ):
        raise NotFound(f"No video found with id '{video_id[:64]}'.")
    return video


def require_role(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the view only for an admin token of one of ``roles`` (``current_operator()``)."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            admit_operator(current_state(), _attempt(), roles, current_context())
            return view(*args, **kwargs)

        return wrapper

    return decorate


def current_operator() -> Operator:
    operator = current_context().operator
    assert operator is not None, "current_operator() outside a @require_role view"
    return operator
