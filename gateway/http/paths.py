"""Refuse request paths that try to mean something other than what they say.

WSGI hands the application a percent-decoded ``PATH_INFO``, so ``/v1/videos/a%2f..%2fx``
arrives as ``/v1/videos/a/../x``. Routing never copies the incoming path upstream (upstream
paths are composed from validated ids), but a path that needed encoding tricks is never a
legitimate client's, so it is refused outright.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.http.errors import ApiError

_ENCODED_TRICKS = ("%2f", "%5c", "%2e", "%00", "%0a", "%0d", "%25")


def _raw_path(environ: Mapping[str, Any]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    return str(raw).split("?", 1)[0] if raw else str(environ.get("PATH_INFO", ""))


def is_tricky(raw_path: str, decoded_path: str) -> bool:
    """Whether a path uses traversal, encoded separators, doubled slashes or an authority."""
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        return True
    lowered = raw_path.lower()
    if "\\" in raw_path or any(trick in lowered for trick in _ENCODED_TRICKS):
        return True
    for path in (raw_path, decoded_path):
        segments = path.split("/")[1:]
        if any(segment in (".", "..") for segment in segments):
            return True
        if "" in segments[:-1]:
            return True
    return "\x00" in decoded_path or "\\" in decoded_path


def refuse_path_tricks(environ: Mapping[str, Any]) -> None:
    """Raises ApiError (400 ``invalid_path``) for a tricky request path."""
    if is_tricky(_raw_path(environ), str(environ.get("PATH_INFO", ""))):
        raise ApiError(400, "The request path is not valid.", "invalid_path")
