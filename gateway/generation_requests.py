"""Reading a generation request (multipart or JSON) into the domain's terms."""

from __future__ import annotations

from typing import Any

from flask import request

from gateway.errors import ApiError
from keys.policies import (
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


def _fields() -> dict[str, Any]:
    if media_type() == "application/json":
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.", "invalid_json")
        return payload
    # The body was read (and cached) for forwarding; werkzeug parses the form from the cache.
    return {name: request.form.get(name) for name in request.form}


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
    if isinstance(raw_seconds, bool) or not (text.isascii() and text.isdigit()):
        raise _invalid("seconds", KNOWN_SECONDS)
    seconds = int(text)
    if seconds not in KNOWN_SECONDS:
        raise _invalid("seconds", KNOWN_SECONDS)
    return GenerationRequest(model=model, size=size, seconds=seconds, prompt=prompt_of(fields))
