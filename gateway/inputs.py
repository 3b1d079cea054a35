"""Parsing of user-supplied values shared by the admin API and the CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import request

from gateway.errors import ApiError
from keys.errors import InvalidInput

_DURATION = re.compile(r"(\d{1,9})\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str | int, param: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h``, ``30d``, ``2w``. Raises InvalidInput."""
    if isinstance(text, bool):
        raise InvalidInput(f"{param} must be a duration such as 3600, 12h or 30d", param=param)
    if isinstance(text, int):
        if text < 0:
            raise InvalidInput(f"{param} must not be negative", param=param)
        return timedelta(seconds=text)
    match = _DURATION.fullmatch(str(text).strip().lower())
    if not match:
        raise InvalidInput(f"{param} must be a duration such as 3600, 12h or 30d", param=param)
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_timestamp(text: str, param: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-12-31T00:00:00Z``). Raises InvalidInput."""
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{param} must be an ISO 8601 time", param=param) from None
    if value.tzinfo is None:
        raise InvalidInput(f"{param} must include a time zone, e.g. Z", param=param)
    return value.astimezone(UTC)


def json_body() -> dict[str, Any]:
    """The request's JSON object (an empty body counts as ``{}``). Raises ApiError (400)."""
    if not request.get_data(cache=True):
        return {}
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_json")
    return payload


def optional_string(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", param=name)
    return value


def required_string(payload: dict[str, Any], name: str) -> str:
    value = optional_string(payload, name)
    if value is None or not value.strip():
        raise InvalidInput(f"{name} is required", param=name, code="missing_required_parameter")
    return value
