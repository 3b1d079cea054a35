"""The log redaction filter: no key, token or upstream credential reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime

from gateway.observability.logs import (
    REDACTED,
    AccessLog,
    JsonFormatter,
    LineWriter,
    RedactingFilter,
)
from keys.access.keyformat import KeyFormat

KEYS, TOKENS = KeyFormat("drwb"), KeyFormat("drwbadm")
CREDENTIAL = "sk-upstream-master-credential-0123456789"


def line(message: str, **extra: object) -> str:
    record = logging.makeLogRecord({"msg": message, "levelno": logging.INFO, **extra})
    RedactingFilter([KEYS.embedded, TOKENS.embedded], [CREDENTIAL]).filter(record)
    return JsonFormatter().format(record)


def test_secrets_are_masked_in_the_message_and_in_every_kind_of_extra() -> None:
    key, token = KEYS.generate(), TOKENS.generate()
    written = line(
        f"saw {key}",
        path=f"/v1/videos?x={key}",
        details={"token": token, "nested": [CREDENTIAL]},
        headers=("Authorization", f"Bearer {key}"),
        count=3,
    )
    for secret in (key, token, CREDENTIAL):
        assert secret not in written
    entry = json.loads(written)
    assert entry["count"] == 3 and REDACTED in entry["message"] and REDACTED in entry["path"]
    assert REDACTED in entry["details"] and REDACTED in entry["headers"]


def test_a_key_glued_to_other_text_is_masked_too() -> None:
    key = KEYS.generate()
    assert key not in line(f"value=x{key}y and \\n{key}")


def test_the_writer_writes_queued_lines_in_one_batch_and_everything_at_stop() -> None:
    stream = io.StringIO()
    writes: list[str] = []
    original_write = stream.write

    def counting_write(text: str) -> int:
        writes.append(text)
        return original_write(text)

    stream.write = counting_write  # type: ignore[method-assign]
    writer = LineWriter(stream, interval=3600)  # the thread never wakes during the test
    for number in range(50):
        writer.write(f"line {number}")
    assert stream.getvalue() == ""  # request threads never write themselves

    writer.flush()
    assert len(writes) == 1 and stream.getvalue().splitlines() == [f"line {n}" for n in range(50)]
    writer.write("last")
    writer.stop()
    assert stream.getvalue().splitlines()[-1] == "last"


def test_the_writer_thread_writes_without_being_asked() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream, interval=0.01)
    writer.write("soon")
    deadline = time.monotonic() + 5
    while "soon" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.stop()
    assert stream.getvalue() == "soon\n"


def test_access_lines_are_json_in_the_record_shape_with_secrets_masked() -> None:
    stream = io.StringIO()
    redactor = RedactingFilter([KEYS.embedded, TOKENS.embedded], [CREDENTIAL])
    writer = LineWriter(stream, interval=3600, redactor=redactor)
    key = KEYS.generate()
    AccessLog(writer).write(
        {"request_id": "req_1", "path": f"/v1/videos/{key}", "status": 404, "note": CREDENTIAL}
    )
    writer.write("a finished line")
    AccessLog(writer).write({"request_id": "req_2", "path": "/v1/me", "status": 200})
    assert stream.getvalue() == ""  # the request thread only queued the record
    writer.stop()

    written = stream.getvalue()
    assert key not in written and CREDENTIAL not in written
    first, finished, second = written.splitlines()
    assert finished == "a finished line"  # in the order queued
    assert json.loads(second)["request_id"] == "req_2"
    entry = json.loads(first)
    assert entry["logger"] == "drawbridge.access" and entry["message"] == "request"
    assert entry["status"] == 404 and entry["path"] == f"/v1/videos/{REDACTED}"
    assert set(entry) >= {"time", "level", "request_id"}


def test_times_are_rfc_3339_in_utc_with_milliseconds() -> None:
    record = logging.makeLogRecord({"msg": "x", "levelno": logging.INFO, "created": 1796390303.25})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "2026-12-04T13:18:23.250Z"
    assert datetime.fromisoformat(entry["time"]) == datetime.fromtimestamp(1796390303.25, UTC)


def test_gunicorns_handlers_write_redacted_json_lines() -> None:
    """gateway/process/server.py GunicornLogger turns gunicorn's handlers into these."""
    from gateway.observability.logs import to_json_lines

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    to_json_lines(handler)
    to_json_lines(handler)  # gunicorn runs setup again on reload: still one filter
    logger = logging.getLogger("gunicorn.error.test")
    logger.addHandler(handler)
    try:
        key = KeyFormat("drwb").generate()
        logger.warning("Invalid request from ip=%s: %s", "127.0.0.1", f"'Authorization {key}'")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert key not in stream.getvalue() and REDACTED in entry["message"]
    assert entry["logger"] == "gunicorn.error.test" and entry["level"] == "WARNING"
    assert len(handler.filters) == 1
