"""The one error shape, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

Domain exceptions and werkzeug's HTTP errors are translated here, at the edge, and nowhere
else. ``tests/test_error_shape.py`` pins the shape for every failure path.

Every error also says whether sending the same request again can help, in the
``x-should-retry`` header that the openai SDK obeys before its own rules (which would retry
every 409, 429 and 5xx, sleeping up to two minutes on a ``Retry-After``): ``true`` for a
short rate-limit wait, an unreachable store and a failing backend; ``false`` for everything
a retry cannot change (a bad key, a refusal, a lockdown, a quota that resets hours away).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, jsonify
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from keys.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    InvalidKey,
    InvalidShareLink,
    KeyRejected,
    Lockdown,
    NotFound,
    QuotaExceeded,
    ShareLinkExpired,
)

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
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
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
        g.error_code = error.code
        g.error_param = error.param
    response = jsonify(error_body(error))
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def from_domain(exc: DomainError) -> ApiError:
    """The HTTP meaning of a domain exception."""
    if isinstance(exc, InvalidKey | KeyRejected):
        return ApiError(401, exc.message, exc.code, param=exc.param)
    if isinstance(exc, Lockdown):
        return ApiError(
            503,
            exc.message,
            exc.code,
            headers={"Retry-After": str(LOCKDOWN_RETRY_AFTER_SECONDS)},
            should_retry=False,
        )
    if isinstance(exc, QuotaExceeded):
        # Every 429 says when to come back; retry-after-ms is what the openai SDK reads first.
        headers = {
            "Retry-After": str(exc.retry_after),
            "retry-after-ms": str(exc.retry_after * 1000),
        }
        return ApiError(429, exc.message, exc.code, param=exc.quota.metric, headers=headers)
    if isinstance(exc, InvalidShareLink):
        return ApiError(404, exc.message, exc.code)
    if isinstance(exc, ShareLinkExpired):
        return ApiError(410, exc.message, exc.code)
    if isinstance(exc, NotFound):
        return ApiError(404, exc.message, exc.code, param=exc.param)
    if isinstance(exc, InvalidInput):
        return ApiError(400, exc.message, exc.code, param=exc.param)
    if isinstance(exc, Conflict):
        return ApiError(409, exc.message, exc.code, param=exc.param)
    return ApiError(400, exc.message, exc.code, param=exc.param)


def from_http(exc: HTTPException) -> ApiError:
    status = exc.code or 500
    messages = {
        404: "Unknown request URL. Please check the URL and method.",
        413: "The request body is larger than the gateway accepts.",
    }
    message = messages.get(status, exc.description or exc.name)
    return ApiError(status, message, _CODE_BY_STATUS.get(status, "http_error"))


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        return error_response(from_domain(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = error_response(from_http(exc))
        if exc.code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def _storage_down(exc: SQLAlchemyError) -> Response:
        # Fail closed: without the key store nothing is admitted, and nothing is guessed.
        current_app.logger.error("key store unavailable: %s", type(exc).__name__)
        return error_response(
            ApiError(
                503,
                "The gateway cannot reach its key store; retry shortly.",
                "service_unavailable",
                headers={"Retry-After": "1"},
            )
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        current_app.logger.exception("unhandled error")
        return error_response(
            ApiError(500, "The gateway failed to handle the request.", "internal_error")
        )
