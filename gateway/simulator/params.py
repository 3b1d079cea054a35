"""Reading request parameters: body fields (JSON, multipart or urlencoded) and list arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import request

from gateway.simulator.errors import ApiError

DEFAULT_PAGE_LIMIT = 20
MAX_PAGE_LIMIT = 100


def request_fields() -> dict[str, Any]:
    """The request body as a dict, whether it was JSON, multipart or urlencoded."""
    if request.is_json:
        body = request.get_json()  # a malformed body raises BadRequest, rendered as a 400
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_type")
        return body
    # The SDK always sends multipart (even without a file); files such as input_reference are
    # accepted and ignored, since a fake generation has no use for them.
    return {**request.form.to_dict(), **request.files.to_dict()}


def _text_field(fields: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    """A string field; integers are accepted too because JSON callers send `seconds: 4`."""
    value = fields.get(name)
    if value is None:
        return default
    if type(value) is int:
        return str(value)
    if not isinstance(value, str):
        raise ApiError(
            400, f"Invalid type for {name!r}: expected a string.", param=name, code="invalid_type"
        )
    return value


def choice(fields: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    """A field that must be one of `allowed`; the first one is the default."""
    value = _text_field(fields, name, allowed[0])
    if value not in allowed:
        supported = ", ".join(repr(option) for option in allowed)
        raise ApiError(
            400,
            f"Invalid value: {value!r}. Supported values are: {supported}.",
            param=name,
            code="invalid_value",
        )
    return value


def required_prompt(fields: Mapping[str, Any]) -> str:
    """The required, non-blank prompt."""
    prompt = _text_field(fields, "prompt")
    if prompt is None or not prompt.strip():
        raise ApiError(
            400,
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    return prompt


def limit_arg() -> int:
    """The `limit` query parameter of a list call."""
    raw = request.args.get("limit") or str(DEFAULT_PAGE_LIMIT)
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE_LIMIT:
        raise ApiError(
            400,
            f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}.",
            param="limit",
            code="invalid_value",
        )
    return int(raw)
