"""Structured JSON logs that cannot carry a secret.

A redaction filter sits on the gateway's handler: any text shaped like a Drawbridge key or
admin token, and the upstream credential itself, is masked before a record is written, so a
careless log call elsewhere cannot leak one.
"""

from __future__ import annotations

import json
import logging
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
            if name not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, self.redact(value))
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


def configure_logging(level: str, state: GatewayState) -> None:
    """Send the gateway's logs, as JSON lines with secrets redacted, to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
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
