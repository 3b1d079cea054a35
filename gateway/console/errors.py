"""Failures on console pages are pages too: the domain's message, with the HTTP status the
admin API would answer."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

from gateway.console.access import refusal_page
from gateway.console.blueprint import bp
from gateway.errors import ApiError, from_domain, from_http
from keys.errors import DomainError


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[str, int]:
    return refusal_page(exc.status, exc.message)


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> tuple[str, int]:
    error = from_domain(exc)
    return refusal_page(error.status, error.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    error = from_http(exc)
    return refusal_page(error.status, error.message)
