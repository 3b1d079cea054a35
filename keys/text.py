"""Free text from outside — reasons, names, emails, leak URLs, metadata, notes — made safe to
store: it never holds a live secret, and never a character the database or the audit hash
cannot take.

Two rules, one per kind of write:

* ``clean_text`` never refuses. Revocation, suspension and the kill switch must happen
  whatever their free text holds, so NUL, lone surrogates and control characters become
  U+FFFD and overlong text is clipped.
* ``checked_text`` refuses such text with ``InvalidInput`` (400 ``invalid_value``): creating
  a tester or a token can simply be tried again with better input.

Both mask anything that parses as a Drawbridge secret (a tester key or an admin token with a
valid checksum, whatever its prefix) down to its hint, ``drwb_...wxyz``: a key pasted into a
revoke reason must not live on in ``revoked_reason``, the audit trail and every export.
"""

from __future__ import annotations

import re
from typing import Any

from keys.access.keyformat import BODY_LENGTH, RANDOM_LENGTH, checksum
from keys.errors import InvalidInput

REPLACEMENT = "\ufffd"
CLIPPED = "..."

# The body of a secret follows ``<prefix>_``; a body cannot hold ``_``, so candidates never
# overlap. The checksum decides (one random candidate in 56 billion passes).
_SECRET_BODY = re.compile(rf"(?<=[a-z0-9]_)[0-9A-Za-z]{{{BODY_LENGTH}}}")
# NUL and the other C0 controls, DEL, the C1 controls, lone surrogates (json.loads gives
# them for "\ud800"; neither UTF-8 nor PostgreSQL can hold one) and two non-characters.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_UNSAFE_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _masked(match: re.Match[str]) -> str:
    body = match.group()
    if checksum(body[:RANDOM_LENGTH]) != body[RANDOM_LENGTH:]:
        return body
    return f"...{body[-4:]}"


def mask_secrets(text: str) -> str:
    """``text`` with every checksum-valid Drawbridge secret cut to its hint (``drwb_...wxyz``)."""
    if "_" not in text:
        return text
    return _SECRET_BODY.sub(_masked, text)


def holds_secret(text: str) -> bool:
    """Whether ``text`` holds a checksum-valid Drawbridge secret."""
    return mask_secrets(text) != text


def clean_text(text: str, limit: int, *, multiline: bool = True) -> str:
    """Text safe to store, never refused: unsafe characters become U+FFFD, secrets are
    masked, surrounding space is stripped and text over ``limit`` characters is clipped."""
    unsafe = _UNSAFE_MULTILINE if multiline else _UNSAFE
    text = mask_secrets(unsafe.sub(REPLACEMENT, text)).strip()
    if len(text) > limit:
        text = text[: limit - len(CLIPPED)] + CLIPPED
    return text


def checked_text(text: str, param: str, limit: int, *, multiline: bool = False) -> str:
    """Text safe to store, with secrets masked and surrounding space stripped.

    Raises InvalidInput (``param``) for NUL, lone surrogates, control characters (tab and
    newline are allowed when ``multiline``) or more than ``limit`` characters.
    """
    unsafe = _UNSAFE_MULTILINE if multiline else _UNSAFE
    if unsafe.search(text):
        raise InvalidInput(
            f"{param} must not contain NUL, control characters or unpaired surrogates",
            param=param,
        )
    text = text.strip()
    if len(text) > limit:
        raise InvalidInput(f"{param} must be at most {limit} characters", param=param)
    return mask_secrets(text)


def checked_strings(value: Any, param: str, limit: int) -> Any:
    """A JSON value (from a policy or metadata) with every string, key or value, checked by
    ``checked_text``. Raises InvalidInput."""
    if isinstance(value, str):
        return checked_text(value, param, limit, multiline=True)
    if isinstance(value, dict):
        return {
            checked_text(str(name), param, limit): checked_strings(item, param, limit)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [checked_strings(item, param, limit) for item in value]
    return value
