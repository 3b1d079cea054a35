"""Failures on console pages are pages too: the message and the HTTP status the admin API
would answer (gateway/http/errors.py translates; this only renders)."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

from gateway.console.access import refusal_page
from gateway.console.blueprint import bp
from gateway.http.errors import ApiError, api_error
from gateway.upstream.client import UpstreamError
from keys.errors import DomainError


@bp.errorhandler(ApiError)
@bp.errorhandler(DomainError)
@bp.errorhandler(UpstreamError)
@bp.errorhandler(HTTPException)
def _refused(exc: Exception) -> tuple[str, int]:
    error = api_error(exc)
    return refusal_page(error.status, error.message)
