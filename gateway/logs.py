"""Structured JSON logs that cannot carry a secret.

A redaction filter sits on the gateway's handler: any text shaped like a Drawbridge key or
admin token, and the upstream credential itself, is masked before a record is written, so a
careless log call elsewhere cannot leak one.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.state import GatewayState

_HANDLER_NAME = "drawbridge"
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message"}
REDACTED = "[REDACTED]"


class RedactingFilter(logging.Filter):
    def __init__(self, patterns: list[re.Pattern[str]], literals: list[str]) -> None:
        super().__init__()
        self._patterns = patterns
        self._literals = [literal for literal in literals if literal]

    def redact(self, text: str) -> str:
        for literal in self._literals:
            text = text.replace(literal, REDACTED)
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for name, value in list(vars(record).items()):
            if name in _STANDARD_ATTRIBUTES or value is None:
                continue
            if isinstance(value, str):
                setattr(record, name, self.redact(value))
            elif not isinstance(value, bool | int | float):
                # Containers and objects are written as JSON or their str(): redact that text,
                # so a dict holding a key cannot slip past.
                setattr(record, name, self.redact(json.dumps(value, default=str)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands finished lines to the writer thread. The record is redacted and formatted here,
    in the request's thread; only the write to stderr happens elsewhere."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        line = self.format(record)
        return logging.makeLogRecord({"msg": line, "levelno": record.levelno})


_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    """Write out what is queued and stop the writer (at exit, or before replacing it)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(_stop_listener)


def configure_logging(level: str, state: GatewayState) -> None:
    """Send the gateway's logs, as JSON lines with secrets redacted, to stderr.

    Request threads only format and enqueue; one writer thread per process owns stderr, so
    eight busy threads do not queue on the stream's lock (measured: a tenth of a loaded
    worker's time went there).
    """
    global _listener
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    _stop_listener()
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    _listener = logging.handlers.QueueListener(lines, writer)
    _listener.start()
    handler = _QueueHandler(lines)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(
        RedactingFilter(
            [state.store.key_format.embedded, state.store.token_format.embedded],
            [state.upstream.credential_for_redaction()],
        )
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
