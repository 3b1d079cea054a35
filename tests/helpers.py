"""Values and small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_ROOT_SECRET = "dGVzdC1yb290LXNlY3JldC10aGF0LWlzLWxvbmctZW5vdWdoLTEyMzQ1Njc4OTA="
UPSTREAM_URL = "http://upstream.test/v1"
UPSTREAM_CREDENTIAL = "sk-upstream-MASTER-credential-never-shown-0123456789"


def service_unavailable(name: str, detail: str) -> None:
    """Skip on a laptop, fail in CI: the service is part of what CI must prove."""
    message = (
        f"{name} is not reachable ({detail}). These tests need it: start it "
        "(README, 'Running the tests'); outside CI they are skipped."
    )
    if CI:
        pytest.fail(message)
    pytest.skip(message)


class FakeClock:
    """A settable clock for expiry and grace periods."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def forwarded_fields(sent: Any) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """What a create the gateway sent upstream says: its fields, and its file parts as
    (filename, content type, bytes). Parses JSON and multipart alike."""
    import io
    import json

    from werkzeug.formparser import parse_form_data

    body = sent.body if isinstance(sent.body, bytes) else (sent.body or "").encode()
    content_type = sent.headers["Content-Type"]
    if content_type.startswith("application/json"):
        return json.loads(body), {}
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    _, form, files = parse_form_data(environ)
    parts = {
        name: (part.filename or "", part.mimetype, part.read()) for name, part in files.items()
    }
    return dict(form.items()), parts
