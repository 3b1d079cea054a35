"""The one error shape, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

Every exception becomes that shape here, at the edge, and nowhere else (``api_error``):
domain exceptions by a status table, the backend's failures (``UpstreamError``) with their
own status, an unreachable database as a 503, werkzeug's HTTP errors by their status, and
anything else as a logged 500. ``tests/http/test_error_shape.py`` pins the shape for every
failure path, ``tests/http/test_error_table.py`` the table.

Every error also says whether sending the same request again can help, in the
``x-should-retry`` header that the openai SDK obeys before its own rules (which would retry
every 409, 429 and 5xx, sleeping up to two minutes on a ``Retry-After``): ``true`` for a
short rate-limit wait, an unreachable store and a failing backend; ``false`` for everything
a retry cannot change (a bad key, a refusal, a lockdown, a quota that resets hours away).

No error echoes a secret: anything in a message or a param that parses as a tester key or an
admin token (a valid checksum, whatever its prefix) is cut to its hint, ``drwb_...wxyz``. A
client puts keys where they do not belong (a path segment, a query parameter, a JSON field's
name), and error bodies travel further than requests: logs, CI transcripts, bug reports.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, has_app_context, has_request_context, jsonify
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import ClientDisconnected, HTTPException

from gateway.admission.limits import LimitState, rate_limit_headers
from gateway.http.current import current_context
from gateway.upstream.client import UpstreamError
from keys.errors import (
    Conflict,
    DatabaseUnreachable,
    DomainError,
    Forbidden,
    InvalidInput,
    InvalidKey,
    InvalidShareLink,
    KeyRejected,
    Lockdown,
    NotFound,
    NotReady,
    RateLimited,
    Refused,
    SchemaNotCurrent,
    ShareLinkExpired,
    TooManyInFlight,
)
from keys.text import mask_secrets

log = logging.getLogger("drawbridge.errors")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
}


# A lockdown lasts until an operator lifts it: minutes at the least. Past the SDK's two-minute
# ceiling, so that no client sleeps on it even without ``x-should-retry``.
LOCKDOWN_RETRY_AFTER_SECONDS = 300
# The longest Retry-After worth a client's automatic wait; a 429 that resets later (a daily
# quota) is not retried.
RETRY_AFTER_WORTH_WAITING_SECONDS = 60
# 5xx that a repeat can get past: the gateway's store or the backend failed this time.
_RETRYABLE_SERVER_CODES = frozenset(
    {"service_unavailable", "signing_keys_unavailable", "upstream_error", "upstream_timeout"}
)


class ApiError(Exception):
    """An HTTP failure with everything the error body needs."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        should_retry: bool | None = None,
    ) -> None:
        # Masked here, where every error body and every usage event's error param start.
        message = mask_secrets(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = mask_secrets(param) if param is not None else None
        self.error_type = error_type or _TYPE_BY_STATUS.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = dict(headers or {})
        if status == 401:
            self.headers.setdefault("WWW-Authenticate", 'Bearer realm="drawbridge"')
        retry = should_retry if should_retry is not None else self._worth_retrying()
        self.headers.setdefault("x-should-retry", "true" if retry else "false")

    def _worth_retrying(self) -> bool:
        """Whether the same request, sent again soon, can succeed."""
        if self.status == 429:
            wait = self.headers.get("Retry-After", "0")
            return wait.isdigit() and int(wait) <= RETRY_AFTER_WORTH_WAITING_SECONDS
        if self.status == 408:
            return True
        return self.status >= 500 and self.code in _RETRYABLE_SERVER_CODES


def error_body(error: ApiError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: ApiError) -> Response:
    if has_request_context():
        context = current_context()
        context.error_code = error.code
        context.error_param = error.param
    response = jsonify(error_body(error))
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


# The HTTP status of each domain exception. An exception takes the entry of the most
# specific class it is an instance of (the first one in its MRO that is listed), so a new
# subclass inherits its parent's status until it gets its own line. DomainError itself is not
# listed: an exception no entry covers is a 500 and logged, never a silent 400
# (tests/http/test_error_table.py checks that every domain exception has an entry).
DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    NotReady: 400,
    InvalidKey: 401,
    KeyRejected: 401,
    Forbidden: 403,
    NotFound: 404,
    InvalidShareLink: 404,
    Conflict: 409,
    ShareLinkExpired: 410,
    Refused: 429,
    Lockdown: 503,
    SchemaNotCurrent: 503,
    DatabaseUnreachable: 503,
}


def domain_status(exc: DomainError) -> int | None:
    """The status of the most specific listed class ``exc`` is an instance of, or None."""
    for cls in type(exc).__mro__:
        status = DOMAIN_STATUS.get(cls)
        if status is not None:
            return status
    return None


def from_domain(exc: DomainError) -> ApiError:
    """The HTTP meaning of a domain exception."""
    status = domain_status(exc)
    if status is None:
        _log_unexpected(f"domain error with no HTTP status: {type(exc).__name__}")
        return ApiError(500, "The gateway failed to handle the request.", "internal_error")
    headers: dict[str, str] = {}
    should_retry: bool | None = None
    if isinstance(exc, Lockdown):
        headers["Retry-After"] = str(LOCKDOWN_RETRY_AFTER_SECONDS)
        should_retry = False
    elif isinstance(exc, DatabaseUnreachable):
        headers["Retry-After"] = "1"
        should_retry = True
    elif isinstance(exc, SchemaNotCurrent):
        should_retry = False  # nothing changes until an operator runs the migrations
    elif isinstance(exc, Refused):
        # Every 429 says when to come back; retry-after-ms is what the openai SDK reads first.
        headers["Retry-After"] = str(exc.retry_after)
        headers["retry-after-ms"] = str(exc.retry_after * 1000)
        if isinstance(exc, RateLimited):
            window = LimitState(exc.limit, exc.remaining, exc.reset_in)
            headers.update(rate_limit_headers(window, refused=True))
        if isinstance(exc, TooManyInFlight):
            should_retry = True  # a running request of the key ends in moments
    return ApiError(
        status, exc.message, exc.code, param=exc.param, headers=headers, should_retry=should_retry
    )


def from_upstream(exc: UpstreamError) -> ApiError:
    """The backend's failure as the tester hears it: 502/504, or its own 4xx passed on."""
    return ApiError(exc.status, exc.message, exc.code, param=exc.param, error_type=exc.error_type)


def api_error(exc: BaseException) -> ApiError:
    """Any exception as the one error shape: the only translation there is.

    Domain and upstream errors by their tables above; an unreachable database is a 503 (fail
    closed: without the key store nothing is admitted, and nothing is guessed); werkzeug's
    HTTP errors by their status; anything else is a 500, logged with its traceback.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        return from_domain(exc)
    if isinstance(exc, UpstreamError):
        return from_upstream(exc)
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        _log_error("key store unavailable: %s", type(exc).__name__)
        return ApiError(
            503,
            "The gateway cannot reach its key store; retry shortly.",
            "service_unavailable",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, HTTPException):
        return from_http(exc)
    _log_unexpected("unhandled error")
    return ApiError(500, "The gateway failed to handle the request.", "internal_error")


def _log_error(message: str, *args: object) -> None:
    (current_app.logger if has_app_context() else log).error(message, *args)


def _log_unexpected(message: str) -> None:
    # Called while the exception is being handled: the traceback goes with the line.
    (current_app.logger if has_app_context() else log).exception(message)


def from_http(exc: HTTPException) -> ApiError:
    if isinstance(exc, ClientDisconnected):  # werkzeug's LimitedStream: the body ended early
        return ApiError(
            400, "The request body ended before the length its Content-Length gave.", "bad_request"
        )
    status = exc.code or 500
    messages = {
        404: "Unknown request URL. Please check the URL and method.",
        413: "The request body is larger than the gateway accepts.",
    }
    message = messages.get(status, exc.description or exc.name)
    return ApiError(status, message, _CODE_BY_STATUS.get(status, "http_error"))


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _any_error(exc: Exception) -> Response:
        response = error_response(api_error(exc))
        if isinstance(exc, HTTPException) and exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response
