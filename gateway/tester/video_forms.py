"""Reading a generation request (multipart or JSON) into the domain's terms."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from urllib3 import encode_multipart_formdata

from gateway.http.errors import ApiError
from gateway.http.inputs import json_body
from keys.limits.policies import (
    DEFAULT_MODEL,
    DEFAULT_SECONDS,
    DEFAULT_SIZE,
    KNOWN_MODELS,
    KNOWN_SECONDS,
    KNOWN_SIZES,
    MAX_PROMPT_CHARS,
    GenerationRequest,
)

CREATE_CONTENT_TYPES = ("multipart/form-data", "application/json")


def media_type() -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


# The fields a create may carry. Anything else is refused rather than passed on unread.
FIELDS = ("prompt", "model", "seconds", "size", "input_reference")


def _refuse_unknown(names: set[str]) -> None:
    unknown = sorted(names - set(FIELDS))
    if unknown:
        raise ApiError(
            400, f"Unknown parameter: {unknown[0]}.", "unknown_parameter", param=unknown[0]
        )


def _fields() -> dict[str, Any]:
    if media_type() == "application/json":
        payload = json_body()
        _refuse_unknown(set(payload))
        return payload
    form, files = request.form, request.files
    _refuse_unknown(set(form) | set(files))
    # A field given twice, or a checked field sent as a file part, could mean one thing to
    # the gateway and another to the backend: refuse the ambiguity.
    for name in set(form) | set(files):
        count = len(form.getlist(name)) + len(files.getlist(name))
        if count > 1 or (name in files and name != "input_reference"):
            raise ApiError(400, f"Give {name} once, as a plain field.", "invalid_value", param=name)
    return {name: form.get(name) for name in form}


def forwarded_body(generation: GenerationRequest) -> tuple[bytes, str]:
    """The body sent upstream: exactly the values the policy and the quota were checked
    against (never the tester's bytes), plus the reference asset as given."""
    fields: dict[str, Any] = {
        "prompt": generation.prompt,
        "model": generation.model,
        "seconds": str(generation.seconds),
        "size": generation.size,
    }
    if media_type() == "application/json":
        payload = json_body()
        if "input_reference" in payload:
            fields["input_reference"] = payload["input_reference"]
        return json.dumps(fields).encode(), "application/json"
    parts: dict[str, Any] = dict(fields)
    reference = request.files.get("input_reference")
    if reference is not None:
        parts["input_reference"] = (
            reference.filename or "input_reference",
            reference.read(),
            reference.mimetype or "application/octet-stream",
        )
    elif request.form.get("input_reference") is not None:
        parts["input_reference"] = request.form["input_reference"]
    body, content_type = encode_multipart_formdata(parts)
    return body, content_type


def _invalid(param: str, allowed: tuple[Any, ...]) -> ApiError:
    choices = ", ".join(str(value) for value in allowed)
    return ApiError(
        400, f"Invalid {param}: expected one of {choices}.", "invalid_value", param=param
    )


def prompt_of(fields: dict[str, Any]) -> str:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "prompt is required", "missing_required_parameter", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(
            400,
            f"prompt must be at most {MAX_PROMPT_CHARS} characters",
            "invalid_value",
            param="prompt",
        )
    return prompt


def generation_request() -> GenerationRequest:
    """The create request's model, size, duration and prompt. Raises ApiError (400) for
    values the Videos API does not know (the cohort's policy is checked separately)."""
    fields = _fields()
    model = fields.get("model") or DEFAULT_MODEL
    if model not in KNOWN_MODELS:
        raise _invalid("model", KNOWN_MODELS)
    size = fields.get("size") or DEFAULT_SIZE
    if size not in KNOWN_SIZES:
        raise _invalid("size", KNOWN_SIZES)
    raw_seconds = fields.get("seconds", DEFAULT_SECONDS)
    raw_seconds = DEFAULT_SECONDS if raw_seconds in (None, "") else raw_seconds
    text = str(raw_seconds)
    # len: int() refuses more than 4300 digits with a ValueError.
    if isinstance(raw_seconds, bool) or not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise _invalid("seconds", KNOWN_SECONDS)
    seconds = int(text)
    if seconds not in KNOWN_SECONDS:
        raise _invalid("seconds", KNOWN_SECONDS)
    return GenerationRequest(model=model, size=size, seconds=seconds, prompt=prompt_of(fields))
