"""ApiError and its rendering in the OpenAI shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from flask import Response, request
from werkzeug.exceptions import HTTPException

from gateway.simulator.responses import json_response


class ApiError(Exception):
    """An error answered in the OpenAI shape: {"error": {message, type, param, code}}."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def _error_type(status: int) -> str:
    """The OpenAI error `type` that goes with an HTTP status."""
    if status == 429:
        return "rate_limit_exceeded"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_response(error: ApiError) -> Response:
    """Render an API error in the OpenAI shape."""
    body = {
        "error": {
            "message": error.message,
            "type": _error_type(error.status),
            "param": error.param,
            "code": error.code,
        }
    }
    return json_response(body, error.status)


def http_error_response(error: HTTPException) -> Response:
    """Render werkzeug's errors (unknown route, wrong method, bad JSON...) in the OpenAI shape."""
    status = error.code or 500
    if status == 404:
        message, code = f"Invalid URL ({request.method} {request.path})", "unknown_url"
    elif status == 405:
        message, code = (
            f"Method {request.method} not allowed on {request.path}",
            "method_not_allowed",
        )
    else:
        message, code = error.description or error.name, None
    response = error_response(ApiError(status, message, code=code))
    for name, value in error.get_headers():
        if name.lower() != "content-type":  # keeps Allow on a 405
            response.headers[name] = value
    return response
