"""Parsing of user-supplied values shared by every blueprint and the CLI.

Request JSON is parsed here and only here: with a depth limit, no NaN or infinities, and
every failure a 400 ``invalid_json`` (never a ``RecursionError`` turned 500). Query integers
are bounded to 64 bits. A body is held to its framing before anything reads it: one shorter
than its ``Content-Length`` or with broken chunks is a 400 ``bad_request`` (never a 500, and
never parsed as if it were whole), a chunked one over ``max_request_bytes`` a 413.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

from flask import current_app, request
from gunicorn.http.errors import ParseException

from gateway.http.current import current_context
from gateway.http.errors import ApiError
from keys.durations import parse_duration, parse_time, parse_timestamp
from keys.errors import InvalidInput

# Deeper than any document the API takes (a policy is three levels), far below the depth
# where Python's parser or anything walking the result would recurse out.
MAX_JSON_DEPTH = 32
MAX_QUERY_INT = 2**63 - 1  # what a BIGINT column and SQLite's INTEGER hold
_CHUNK = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _too_deep(document: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))
    return False


def parse_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON document from request bytes. Raises ApiError (400 ``invalid_json``)."""
    try:
        document = json.loads(data, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "The request body is not valid JSON.", "invalid_json") from None
    if _too_deep(document, max_depth):
        raise ApiError(
            400, f"JSON may nest at most {max_depth} levels deep.", "invalid_json"
        ) from None
    return document


def json_document() -> Any:
    """The request's JSON document, None for an empty body. Raises ApiError (400)."""
    context = current_context()
    if not context.json_parsed:
        data = request.get_data(cache=True)
        context.json_document = parse_json(data) if data.strip() else None
        context.json_parsed = True
    return context.json_document


def json_body() -> dict[str, Any]:
    """The request's JSON object (an empty body counts as ``{}``). Raises ApiError (400)."""
    payload = json_document()
    if payload is None and not request.get_data(cache=True).strip():
        return {}
    if not isinstance(payload, dict):  # ``null`` too: a body that is there must be an object
        raise ApiError(400, "The request body must be a JSON object.", "invalid_json")
    return dict(payload)


def bound_request_body() -> None:
    """``before_request``: hold every request body to its framing, before anything reads it.

    A body with ``Content-Length`` must be that long: gunicorn says its input ends by itself
    (``wsgi.input_terminated``), so werkzeug would hand a parser whatever came before the
    client's EOF, and a JSON document cut short but whole (``{"prompt":"hi"}``) would create
    a video. Without that flag werkzeug reads through its ``LimitedStream``, which raises
    ``ClientDisconnected`` (400 ``bad_request``) when the body ends early.

    A body sent chunked is read here up to one byte past ``max_request_bytes`` (werkzeug
    stops reading such a body at the limit *without* an error, so a parser would see it
    truncated) and handed on with its length, like any other. A chunk gunicorn cannot parse
    (a size that is not hex, a control byte in an extension, a chunk longer or shorter than
    it said, an EOF before the last chunk) is the client's framing, not the gateway's
    failure. Raises ApiError (400 ``bad_request``, 413).
    """
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return
    if environ.get("CONTENT_LENGTH"):
        del environ["wsgi.input_terminated"]
        request.__dict__.pop("stream", None)  # werkzeug caches the stream it wrapped
        return
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    stream, body, size = environ["wsgi.input"], [], 0
    try:
        while size <= limit:
            chunk = stream.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            body.append(chunk)
            size += len(chunk)
    # ParseException: gunicorn's InvalidChunkSize, ChunkMissingTerminator and the rest;
    # OSError: its NoMoreData (EOF inside the body) and a connection reset while reading.
    except (ParseException, OSError, ValueError):
        raise ApiError(
            400, "The request body is not valid chunked transfer coding.", "bad_request"
        ) from None
    if size > limit:
        raise ApiError(413, f"The request body is larger than {limit} bytes.", "request_too_large")
    environ["wsgi.input"] = io.BytesIO(b"".join(body))
    environ["CONTENT_LENGTH"] = str(size)
    request.__dict__.pop("stream", None)


def refuse_unsafe_query() -> None:
    """``before_request``: no query parameter may hold NUL or another control character (no
    client needs one, and PostgreSQL cannot even compare with NUL). Raises ApiError (400)."""
    if not request.query_string:
        return
    for name, value in request.args.items(multi=True):
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise ApiError(
                400,
                "Query parameters must not contain control characters.",
                "invalid_value",
                param=_CONTROL.sub("?", name),
            )


def query_int(name: str, default: int | None = None, maximum: int = MAX_QUERY_INT) -> int | None:
    """A non-negative integer query parameter, at most ``maximum``. Raises ApiError (400)."""
    value = request.args.get(name)
    if value is None or value == "":
        return default
    # isascii: str.isdigit() also accepts characters like "²" that int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > maximum:
        raise ApiError(
            400, f"{name} must be an integer between 0 and {maximum}", "invalid_value", param=name
        )
    return int(value)


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


__all__ = [
    "MAX_JSON_DEPTH",
    "bound_request_body",
    "json_body",
    "json_document",
    "optional_string",
    "parse_duration",
    "parse_json",
    "parse_time",
    "parse_timestamp",
    "query_int",
    "refuse_unsafe_query",
    "required_string",
]
