"""The Flask application factory."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import cast

from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import ClosingIterator

from gateway import console
from gateway.admin import api as admin_api
from gateway.admin import approvals as approvals_api
from gateway.admin import provenance as provenance_api
from gateway.admin import usage as usage_api
from gateway.admission.limits import add_headers as add_rate_limit_headers
from gateway.fast_refusal import FastRefusals
from gateway.http.auth import admit_current_tester
from gateway.http.current import (
    EXTENSION,
    current_context,
    current_request,
    current_state,
)
from gateway.http.door import EXTENSION as DOOR
from gateway.http.errors import register_error_handlers
from gateway.http.inputs import bound_request_body, refuse_unsafe_query
from gateway.http.paths import refuse_path_tricks
from gateway.integrations import secret_scanning
from gateway.observability import health, metrics
from gateway.observability.logs import access_log, configure_logging
from gateway.settings import Settings, load_settings
from gateway.state import GatewayState, build_state
from gateway.tester import me, shares, videos
from gateway.tester.usage_event import record_usage
from keys.errors import DatabaseUnreachable
from keys.migrate import require_current_schema

log = logging.getLogger("drawbridge")

_REQUEST_ID_HEADER = "X-Request-Id"
# A client's (or a proxy's) X-Request-Id is kept, to follow one request across systems,
# only if it is this plain: nothing that could split a header or a log line, nothing long.
# It is echoed and logged; the gateway's own id (unique: usage events are filed under it,
# the backend receives it) is generated every time, since a client may repeat an id.
WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TESTER_BLUEPRINTS = frozenset({"videos", "me", "shares"})


def create_app(settings: Settings | None = None, state: GatewayState | None = None) -> Flask:
    """A gateway application. With no arguments, settings come from file and environment."""
    if state is None:
        settings = settings or load_settings()
        # Refuse to serve a missing or unmigrated database: every request would fail. One
        # that is down now may come back: serve, fail closed, and say so in /readyz.
        try:
            require_current_schema(settings.database_url)
        except DatabaseUnreachable as exc:
            log.warning("%s: starting anyway; /readyz reports it until it answers", exc.message)
        state = build_state(settings)
    settings = state.settings
    configure_logging(settings.log_level, state)

    app = Flask("drawbridge")
    # No route answers OPTIONS by itself (Flask's default: 200, no key looked at). The tester
    # plane serves SDKs, not browsers, so it has no CORS preflight to answer: OPTIONS is a
    # method its routes lack, a 405 after admission (_admit_refused_method).
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Paths are matched exactly; '//' and friends are refused, never redirected.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions[EXTENSION] = state
    fast_refusals = None
    if settings.fast_refusals:
        # Inside ProxyFix: the fast path sees the client address the block is kept under.
        app.wsgi_app = fast_refusals = FastRefusals(  # type: ignore[method-assign]
            app,
            state,
            app.wsgi_app,
            request_id_of=client_request_id,
            tester_blueprints=_TESTER_BLUEPRINTS,
        )
    if settings.trusted_proxies:
        # Only the configured number of proxies may speak for the client's address: a
        # spoofed X-Forwarded-For entry beyond them changes nothing.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies
        )
    if fast_refusals is not None:
        # The same refusals for the worker's event loop (gateway/process/door.py).
        app.extensions[DOOR] = fast_refusals.at_the_door_refusals(settings.trusted_proxies)
    state.limits.init_app(app)
    register_error_handlers(app)
    metrics.init_app(app, settings)
    # One hook of each kind, calling the request's steps in order: Flask's own cost per
    # registered hook is paid on every request.
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.teardown_request(_release_slot)
    for blueprint in (
        videos.bp,
        shares.bp,
        me.bp,
        admin_api.bp,
        approvals_api.bp,
        health.bp,
        secret_scanning.bp,
        usage_api.bp,
        provenance_api.bp,
        console.bp,
    ):
        app.register_blueprint(blueprint)
    return app


def client_request_id(incoming: str | None) -> str | None:
    """The client's X-Request-Id when it is well formed, else None."""
    if incoming is not None and WELL_FORMED_REQUEST_ID.fullmatch(incoming):
        return incoming
    return None


def _before_request() -> None:
    _start_request()
    bound_request_body()
    refuse_unsafe_query()
    _admit_refused_method()


def _after_request(response: Response) -> Response:
    _finish_request(response)
    metrics.count_response(response)
    # A key's bulkhead slot, taken at admission, is given back when the request's work is
    # done: at teardown for an answer made whole by the view, at the response's close for a
    # streamed download (after the view has returned and after teardown: the server closes
    # the response when the last byte is written or the client goes away).
    return _hand_slot_to_stream(response)


def _start_request() -> None:
    incoming = current_request()
    context = current_context()  # made here: this is the request's first hook
    context.client_request_id = client_request_id(incoming.headers.get(_REQUEST_ID_HEADER))
    refuse_path_tricks(incoming.environ)
    sweep = current_state().sweep
    if sweep is not None:
        sweep.ensure_running()


def _admit_refused_method() -> None:
    # A method a tester route lacks (OPTIONS, PUT, ...) is still a tester request: the key
    # is checked and counted, and the usage event names the key and the route. werkzeug has
    # refused the method already (routing_exception, raised right after these hooks: a 405
    # with Allow); the rule the path names under an allowed method gives the route and plane.
    incoming = current_request()
    refused = incoming.routing_exception
    if not isinstance(refused, MethodNotAllowed) or not refused.valid_methods:
        return
    adapter = current_app.url_map.bind_to_environ(incoming.environ)
    try:
        rule, _ = adapter.match(method=next(iter(refused.valid_methods)), return_rule=True)
    except HTTPException:
        return
    if rule.endpoint.partition(".")[0] in _TESTER_BLUEPRINTS:
        incoming.url_rule = rule  # the usage event's route; request.blueprint follows it
        admit_current_tester()


def _finish_request(response: Response) -> None:
    # This runs for every response: the request's objects are looked up once, not per use.
    context, incoming = current_context(), current_request()
    echoed = context.client_request_id or context.request_id
    response.headers[_REQUEST_ID_HEADER] = echoed
    add_rate_limit_headers(response, context.rate_limit)
    if incoming.blueprint in _TESTER_BLUEPRINTS and not context.usage_written:
        record_usage(response.status_code)
    access = access_log() if current_state().settings.access_log else None
    if access is not None:
        principal, operator = context.principal, context.operator
        access.write(
            {
                "request_id": echoed,
                # The gateway's own id (usage events, the backend's logs), when it differs.
                "gateway_request_id": context.request_id if echoed != context.request_id else None,
                "method": incoming.method,
                "path": incoming.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - context.started) * 1000, 2),
                "key_id": principal.key_id if principal else None,
                "operator": operator.token_id if operator else None,
            }
        )


def _hand_slot_to_stream(response: Response) -> Response:
    if response.is_streamed:
        context = current_context()
        slot, context.bulkhead_slot = context.bulkhead_slot, None
        if slot is not None:
            # Wrapped around the body itself: a direct_passthrough response hands its body to
            # the server as it is, so Response.call_on_close would never run.
            body = cast(Iterable[bytes], response.response)
            response.response = ClosingIterator(body, slot.release)
    return response


def _release_slot(exc: BaseException | None) -> None:
    context = current_context()
    slot, context.bulkhead_slot = context.bulkhead_slot, None
    if slot is not None:
        slot.release()


__all__ = ["create_app"]
