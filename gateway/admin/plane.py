"""What every ``/admin/v1`` blueprint shares: id routes, strict query strings, body fields.

The rules come from the OpenAPI document (gateway/admin/openapi.py), so the document and the
server cannot drift apart: a query parameter the document does not declare for an operation
is refused with 400 ``unknown_parameter`` (``/keys?tester=x`` must never list every key).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import Blueprint, request
from werkzeug.routing import BaseConverter, Map

from gateway.admin.openapi import (
    DEFAULT_PAGE,
    MAX_PAGE,
    NOT_BLANK,
    declared_query_parameters,
)
from gateway.http.current import current_state
from gateway.http.errors import ApiError
from gateway.http.inputs import json_body
from gateway.services.admission import refuse_secrets_in_query
from keys.errors import InvalidInput

API_PREFIX = "/admin/v1"
_RULE_ARGUMENT = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
_NOT_BLANK = re.compile(NOT_BLANK)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class IdConverter(BaseConverter):
    """``<id("key"):key_id>`` matches ids of one kind only, so ``/keys/revoke`` is never
    mistaken for the key ``revoke`` (and 405's ``Allow`` names the right methods)."""

    def __init__(self, url_map: Map, kind: str) -> None:
        super().__init__(url_map)
        self.regex = re.escape(kind) + r"_[0-9A-Za-z_-]{1,64}"


def admin_blueprint(name: str, import_name: str, url_prefix: str) -> Blueprint:
    """A blueprint of the admin plane: id converters, and query strings checked first."""
    bp = Blueprint(name, import_name, url_prefix=url_prefix)

    @bp.record_once
    def _converters(state: Any) -> None:
        state.app.url_map.converters["id"] = IdConverter

    bp.before_request(refuse_unknown_query_parameters)
    return bp


def _operation_path(rule: str) -> str:
    return _RULE_ARGUMENT.sub(r"{\1}", rule.removeprefix(API_PREFIX))


def refuse_unknown_query_parameters() -> None:
    """Raises ApiError (400) for a query parameter the operation does not declare, one given
    twice, or a value its schema refuses. A credential in the URL is refused as such first."""
    if not request.args:
        return
    store = current_state().store
    refuse_secrets_in_query(request.args.items(multi=True), (store.key_format, store.token_format))
    rule = request.url_rule
    declared = (
        declared_query_parameters(_operation_path(rule.rule), request.method)
        if rule is not None
        else {}
    )
    for name in request.args:
        if name not in declared:
            takes = f"takes {', '.join(sorted(declared))}" if declared else "takes no parameters"
            raise ApiError(
                400,
                f"Unknown parameter {name[:64]!r}; this endpoint {takes}.",
                "unknown_parameter",
                param=name[:64],
            )
        values = request.args.getlist(name)
        if len(values) > 1:
            raise ApiError(400, f"{name} is given more than once", "invalid_value", param=name)
        problem = _schema_problem(declared[name], values[0])
        if problem:
            raise ApiError(400, f"{name} {problem}", "invalid_value", param=name)


def _schema_problem(schema: dict[str, Any], value: str) -> str | None:
    """What is wrong with a query value under its (simple) declared schema, if anything."""
    if "enum" in schema:
        return None if value in schema["enum"] else f"must be one of {', '.join(schema['enum'])}"
    if schema.get("type") == "integer":
        # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            return "must be a non-negative integer"
        low, high = schema.get("minimum", 0), schema.get("maximum")
        if int(value) < low or (high is not None and int(value) > high):
            return f"must be between {low} and {high}" if high is not None else f"must be >= {low}"
        return None
    if schema.get("format") == "date":
        try:
            if _DATE.fullmatch(value):
                date.fromisoformat(value)
                return None
        except ValueError:
            pass
        return "must be a date, YYYY-MM-DD"
    pattern = schema.get("pattern")
    if pattern is not None and not re.search(pattern, value):
        return "is not in the expected form"
    if not value:
        return "must not be empty"
    return None


def query_value(name: str) -> str | None:
    """A query parameter's value, checked against its schema before the view ran."""
    return request.args.get(name)


def query_values() -> dict[str, str]:
    """The query string's values, checked against their schemas before the view ran."""
    return request.args.to_dict()


def page_size(default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    """``?limit=``. Raises ApiError (400)."""
    limit = query_value("limit") or str(default)
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= maximum:
        raise ApiError(
            400, f"limit must be between 1 and {maximum}", "invalid_value", param="limit"
        )
    return int(limit)


def body() -> dict[str, Any]:
    """The request's JSON object, with whole numbers written as ``5.0`` read as ``5``: JSON
    does not tell them apart, and neither does the document's ``integer``. Raises ApiError."""
    return {name: _whole(value) for name, value in json_body().items()}


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_whole(item) for item in value]
    if isinstance(value, dict):
        return {name: _whole(item) for name, item in value.items()}
    return value


def text(
    payload: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_length: int,
    pattern: str | None = None,
) -> str | None:
    """A text field of a JSON body: absent (None) unless ``required``; never null, blank,
    longer than ``max_length`` or off ``pattern``. Raises InvalidInput."""
    if name not in payload:
        if required:
            raise InvalidInput(f"{name} is required", param=name, code="missing_required_parameter")
        return None
    value = payload[name]
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", param=name)
    if not _NOT_BLANK.search(value):
        if required:  # a blank reason is no reason: the same error as a missing one
            raise InvalidInput(f"{name} is required", param=name, code="missing_required_parameter")
        raise InvalidInput(f"{name} must not be blank", param=name)
    if len(value) > max_length:
        raise InvalidInput(f"{name} must be at most {max_length} characters", param=name)
    if pattern is not None and not re.search(pattern, value):
        raise InvalidInput(f"{name} is not in the expected form", param=name)
    return value


def flag(payload: dict[str, Any], name: str, *, required: bool = False) -> bool | None:
    """A boolean field of a JSON body. Raises InvalidInput."""
    if name not in payload and not required:
        return None
    value = payload.get(name)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", param=name)
    return value
