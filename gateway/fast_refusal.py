"""The flood's refusals answered in front of Flask: an address this worker holds blocked.

After a leak, strangers hammer the gateway with a revoked key, made-up keys or none, from
one address or a few. Once that address has failed authentication too often
(``auth_failures_per_minute``) and this worker has seen it blocked, every further request
from it is refused with the same 429 ``too_many_failed_attempts`` until the window resets,
without a database or storage read (gateway/admission/limits.py ``refuse_blocked_client``).
Through Flask such a refusal still costs a request context, routing, two hooks, an error
handler and a response object: most of its CPU, and the flood's CPU is what the good tester
queues behind. ``FastRefusals`` answers exactly that refusal as a plain WSGI app, in front
of Flask and behind ``ProxyFix`` (so the client address is the one ``trusted_proxies``
lets through), and hands everything else to Flask unchanged.

It answers only when all of these hold, and each is what the Flask path would decide the
same way before the block (so the answer cannot differ):

* this worker holds the client address blocked in memory, not expired (``held_blocked``);
* the method is GET, POST or DELETE (HEAD answers without a body; other methods take the
  refused-method path of gateway/app.py), there is no query string (a credential in the URL,
  a control character: refused first), no chunked body (read and bounded first), and the
  path is plain ASCII and no path trick (refused first);
* the path names a route whose view admits the tester first (``require_tester``);
* the presented key is not one this worker verified and has not seen refused since (the
  block spares it: a tester behind the flood's NAT address).

Then it produces what the Flask path produces for that request, through the same parts:
the refusal raised by ``refuse_blocked_client`` itself, translated by ``api_error``, its body
serialised by the app's JSON provider into the app's response class; the ``X-Request-Id``
echoed or made; the refusal counted in ``usage_refusals`` (``UsageBuffer.count_refusal``),
the access-log line and the ``/metrics`` counters, in that order.
``tests/http/test_fast_refusal.py`` sends the same hostile requests with the fast path on
and off and compares status, body, headers, log line, metrics and refusal counts.

On a kept-alive connection the worker's event loop asks ``at_the_door`` the same question
before any thread sees the request (gateway/process/door.py): the same refusal, never a
fallback to Flask there, and the block read from memory only.

Nothing is cached that could admit or refuse anything: the block is the one the Flask path
reads, and no refused key is remembered (a suspended key resumed needs no invalidation
here; docs/design.md says why). What is kept is the rendered body of each error message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from flask import Flask, Response
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import MapAdapter

from gateway.http.auth import admits_tester_first
from gateway.http.current import new_request_id
from gateway.http.door import DoorRefusals
from gateway.http.errors import ApiError, api_error, error_body
from gateway.http.paths import refuse_path_tricks
from gateway.observability import metrics
from gateway.observability.logs import access_log
from gateway.services.admission import presented_credential
from gateway.tester.usage_event import stored_client_ip
from keys.errors import RateLimited

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from gateway.state import GatewayState

# HEAD is answered without a body, OPTIONS and the rest take gateway/app.py's refused-method
# path: both stay with Flask.
_METHODS = frozenset({"GET", "POST", "DELETE"})
_REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"
# Distinct error bodies rendered (the block's message is one).
RENDERED_REMEMBERED = 64


class FastRefusals:
    """A WSGI app: the blocked address's refusal, or ``flask_app`` for anything else."""

    def __init__(
        self,
        app: Flask,
        state: GatewayState,
        flask_app: WSGIApplication,
        *,
        request_id_of: Callable[[str | None], str | None],
        tester_blueprints: frozenset[str],
    ) -> None:
        self._app = app
        self._state = state
        self._flask_app = flask_app
        self._request_id_of = request_id_of
        self._tester_blueprints = tester_blueprints
        self._routes: MapAdapter | None = None
        # The error's status line, content type and body, rendered once by the app's own
        # JSON provider and response class: a werkzeug Response and its Headers per refusal
        # cost more than the rest of the fast path together.
        self._rendered: dict[tuple[object, ...], tuple[str, str, bytes]] = {}
        self.answered = 0
        """Requests refused here (tests check which requests took the fast path)."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        answered = self._answer_if_refused(environ, start_response, memory_only=False)
        return self._flask_app(environ, start_response) if answered is None else answered

    def at_the_door(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """The same refusal for the worker's event loop (gateway/process/door.py), or None
        (and nothing called, counted or written) for a request it must hand to Flask.

        The event loop must never wait: the block is taken from memory only, and a block
        that expired meanwhile is Flask's to look up."""
        return self._answer_if_refused(environ, start_response, memory_only=True)

    def _answer_if_refused(
        self, environ: WSGIEnvironment, start_response: StartResponse, *, memory_only: bool
    ) -> Iterable[bytes] | None:
        started = time.perf_counter()
        refused = self._refusal(environ, memory_only=memory_only)
        if refused is None:
            return None
        rule, error = refused
        return self._answer(environ, start_response, started, rule, error)

    def at_the_door_refusals(self, trusted_proxies: int) -> DoorRefusals:
        """``at_the_door`` and its two questions, as the worker's event loop asks them."""
        answer: Callable[..., Iterable[bytes] | None] = self.at_the_door
        if trusted_proxies:
            # The client address the block is kept under, as the app's own ProxyFix gives it.
            answer = ProxyFix(answer, x_for=trusted_proxies)  # type: ignore[arg-type]
        limits = self._state.limits
        return DoorRefusals(
            armed=limits.holds_blocks,
            spared=lambda authorization: limits.verified_keys.holds(
                presented_credential(authorization)
            ),
            answer=answer,
        )

    def _refusal(
        self, environ: WSGIEnvironment, *, memory_only: bool
    ) -> tuple[str, ApiError] | None:
        """The route and the block's refusal for a request the fast path answers, else None."""
        limits = self._state.limits
        client_ip = environ.get("REMOTE_ADDR") or "unknown"  # as gateway/http/auth.py reads it
        if not limits.held_blocked(client_ip):
            return None
        if environ.get("REQUEST_METHOD") not in _METHODS:
            return None
        if environ.get("QUERY_STRING") or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        path = environ.get("PATH_INFO") or ""
        if not path.isascii():  # werkzeug's decoding of the path, and the log's, are then plain
            return None
        try:
            refuse_path_tricks(environ)
            rule, _ = self._route_map().match(path, environ["REQUEST_METHOD"], return_rule=True)
        except (ApiError, HTTPException):
            return None
        endpoint = rule.endpoint
        if endpoint.partition(".")[0] not in self._tester_blueprints or not admits_tester_first(
            self._app.view_functions.get(endpoint)
        ):
            return None
        secret = presented_credential(environ.get("HTTP_AUTHORIZATION"))
        try:
            limits.refuse_blocked_client(client_ip, secret, memory_only=memory_only)
        except RateLimited as exc:
            return rule.rule, api_error(exc)
        # A key this worker verified passes the block (``verified_keys``), or the window
        # reset meanwhile: Flask's path decides (and asks the storage).
        return None

    def _route_map(self) -> MapAdapter:
        # Bound at the first request, when every blueprint is registered. The app matches no
        # host or subdomain, so one adapter serves every request (match() changes nothing).
        if self._routes is None:
            self._routes = self._app.url_map.bind("localhost")
        return self._routes

    def _render(self, error: ApiError) -> tuple[str, str, bytes]:
        """The status line, content type and body of ``error``, as the app would send them."""
        body = error_body(error)
        cache_key = (error.status, *body["error"].values())
        rendered = self._rendered.get(cache_key)
        if rendered is None:
            # gateway/http/errors.py error_response: the app's JSON provider and response class.
            response = cast(Response, self._app.json.response(body))
            response.status_code = error.status
            rendered = (response.status, response.content_type or "", response.get_data())
            if len(self._rendered) >= RENDERED_REMEMBERED:
                self._rendered.clear()
            self._rendered[cache_key] = rendered
        return rendered

    def _answer(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        started: float,
        route: str,
        error: ApiError,
    ) -> Iterable[bytes]:
        state, app = self._state, self._app
        self.answered += 1
        if state.sweep is not None:
            state.sweep.ensure_running()
        request_id = new_request_id()
        client_request_id = self._request_id_of(environ.get(_REQUEST_ID_ENVIRON))
        echoed = client_request_id or request_id
        # The headers in the order error_response and _finish_request (gateway/app.py) set them.
        status, content_type, body = self._render(error)
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *error.headers.items(),
            (_REQUEST_ID_HEADER, echoed),
        ]
        method = environ["REQUEST_METHOD"]
        remote_addr = environ.get("REMOTE_ADDR")
        # A refusal before admission, of no key: counted, never an event (docs/usage.md).
        state.usage.count_refusal(
            state.store.clock(),
            None,
            error.code,
            error.status,
            method,
            route,
            stored_client_ip(remote_addr),
        )
        access = access_log() if state.settings.access_log else None
        if access is not None:
            access.write(
                {
                    "request_id": echoed,
                    "gateway_request_id": request_id if echoed != request_id else None,
                    "method": method,
                    "path": "/" + environ.get("PATH_INFO", "").lstrip("/"),
                    "status": error.status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "key_id": None,
                    "operator": None,
                }
            )
        registry: metrics.MetricsRegistry = app.extensions[metrics.EXTENSION]
        registry.count_response(
            route, method, error.status, time.perf_counter() - started, error.code, error.param
        )
        start_response(status, headers)
        return [body]


__all__ = ["FastRefusals"]
