"""Values and small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from keys.db import PreparedRead

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


class Cli:
    """The ``drawbridge`` command as an operator on the server runs it (the ``cli`` fixture):
    the test's database, root secret and upstream in its environment."""

    def __init__(self, env: Mapping[str, str | None]) -> None:
        self.env = dict(env)
        self.runner = CliRunner()

    def __call__(
        self,
        *args: str,
        code: int | None = 0,
        env: Mapping[str, str | None] | None = None,
        stdin: str | bytes | None = None,
    ) -> Result:
        """Run ``drawbridge *args``; ``code`` is the exit code it must end with (None: any).

        ``env`` adds to or (with None) unsets the environment; exceptions are not caught, so a
        crash fails the test with its traceback instead of passing as exit code 1.
        """
        result = self.runner.invoke(
            main, list(args), env={**self.env, **(env or {})}, input=stdin, catch_exceptions=False
        )
        if code is not None:
            assert result.exit_code == code, result.output
        return result


def assert_openai_error(
    response: Any, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The response is exactly the OpenAI error shape, with this status, code and param, as any
    OpenAI-compatible server sends it (the simulator too); returns the error object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"].strip()
    assert isinstance(error["type"], str) and error["type"]
    assert error["code"] == code, error
    assert error["param"] == param, error
    return error


def assert_error(response: Any, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    """The gateway's error: exactly the OpenAI shape (``assert_openai_error``), with the headers
    the gateway adds to every error; returns the error object."""
    error = assert_openai_error(response, status, code, param)
    # Every error says whether a retry can help (tests/http/test_should_retry.py has the rules).
    assert response.headers["x-should-retry"] in ("true", "false")
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    else:
        assert "WWW-Authenticate" not in response.headers
    return error


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


def count_fetches(read: PreparedRead, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every time ``read`` goes to the database (not answered from a reused row), recorded."""
    fetched: list[Any] = []
    fetch = read._fetch

    def counted(params: Any) -> Any:
        fetched.append(params)
        return fetch(params)

    monkeypatch.setattr(read, "_fetch", counted)
    return fetched
