"""The current process's state and the current request's context, found through Flask.

Flask's ``g`` and ``request`` are proxies that find the current context on every attribute
access; code that runs for every request takes each object once, through these functions.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from flask import Request, current_app, g, request

from gateway.context import RequestContext
from keys.process import unique_hex

if TYPE_CHECKING:
    from gateway.state import GatewayState

# Where the app keeps its GatewayState, in ``app.extensions``.
EXTENSION = "drawbridge"


def current_state() -> GatewayState:
    state: GatewayState = current_app.extensions[EXTENSION]
    return state


def new_request_id() -> str:
    return "req_" + unique_hex()


def current_context() -> RequestContext:
    """This request's context, made on first use (the app's first request hook), so that
    there is only ever one per request."""
    globals_ = cast(Any, g)._get_current_object()
    context: RequestContext | None = getattr(globals_, "context", None)
    if context is None:
        context = globals_.context = RequestContext(new_request_id(), time.perf_counter())
    return context


def current_request() -> Request:
    """The current ``flask.request`` object itself."""
    incoming: Request = cast(Any, request)._get_current_object()
    return incoming
