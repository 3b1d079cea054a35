"""Structured JSON logs that cannot carry a secret.

A redaction filter sits on the gateway's handler: any text shaped like a Drawbridge key or
admin token, and the upstream credential itself, is masked before a record is written, so a
careless log call elsewhere cannot leak one. The access log (one line per request) is built
directly as JSON and redacted as a whole line, without a ``LogRecord``: it runs on every
request.

Lines reach stderr through one writer thread per process that wakes ten times a second and
writes what has gathered in one call: request threads never wait on the stream, and a busy
worker does not wake a thread per line (measured: both cost a loaded worker more than the
formatting). Lines still queued are written when the process exits.

gunicorn's own error and access logs (``gateway.process.server.GunicornLogger``) are JSON lines
through the same redaction: a malformed header line such as ``Authorization Bearer drwb_...``
is quoted in gunicorn's "Invalid HTTP Header" warning, before the application ever runs.
Times are RFC 3339 in UTC, to the millisecond (``2026-12-04T13:38:23.123Z``).
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import logging
import re
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, DEFAULT_KEY_PREFIX, KeyFormat

if TYPE_CHECKING:
    from gateway.state import GatewayState

_HANDLER_NAME = "drawbridge"
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message"}
REDACTED = "[REDACTED]"
WRITE_INTERVAL_SECONDS = 0.1
ACCESS_LOGGER = "drawbridge.access"


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


# One encoder for every line: json.dumps with ``default=`` builds a new one per call.
_JSON = json.JSONEncoder(default=str)


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def _timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-12-04T13:38:23.123Z``."""
    whole = int(seconds)
    millis = min(999, int((seconds - whole) * 1000))
    return f"{_second(whole)}.{millis:03d}Z"


def default_redactor() -> RedactingFilter:
    """Redaction of secrets with the default prefixes, for lines logged before settings are
    read (gunicorn's master as it starts)."""
    return RedactingFilter(
        [KeyFormat(DEFAULT_KEY_PREFIX).embedded, KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX).embedded],
        [],
    )


_redactor = default_redactor()


def install_redaction(state: GatewayState) -> RedactingFilter:
    """Redact this gateway's key and token prefixes and its upstream credential from every
    line, gunicorn's included, from now on; returns the redactor."""
    global _redactor
    _redactor = RedactingFilter(
        [state.store.key_format.embedded, state.store.token_format.embedded],
        [state.upstream.credential_for_redaction()],
    )
    return _redactor


class CurrentRedaction(logging.Filter):
    """Redacts with whatever ``install_redaction`` set last (for handlers made before it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _redactor.filter(record)


def to_json_lines(handler: logging.Handler) -> None:
    """Make a handler someone else set up (gunicorn's) write redacted JSON lines."""
    handler.setFormatter(JsonFormatter())
    if not any(isinstance(f, CurrentRedaction) for f in handler.filters):
        handler.addFilter(CurrentRedaction())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return _JSON.encode(entry)


class LineWriter:
    """Writes lines to a stream from one thread, in batches.

    A line is queued finished (``write``) or as a record the writer turns into redacted
    text itself (``write_record``): the request thread then only queues a few values, and
    the batch is redacted in one pass per pattern instead of one per line.
    """

    def __init__(
        self,
        stream: IO[str],
        interval: float = WRITE_INTERVAL_SECONDS,
        redactor: RedactingFilter | None = None,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._redactor = redactor
        # deque.append and popleft are atomic: request threads take no lock.
        self._lines: collections.deque[str | tuple[float, dict[str, Any]]] = collections.deque()
        self._write_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        """Queue one line (without its newline), redacted already."""
        self._lines.append(line)

    def write_record(self, at: float, fields: dict[str, Any]) -> None:
        """Queue an access-log record (its values are not changed after this): the writer
        renders it as a JSON line and redacts it with its batch."""
        self._lines.append((at, fields))

    def flush(self) -> None:
        """Write everything queued so far."""
        with self._write_lock:
            batch: list[str] = []
            records = False
            try:
                while True:
                    item = self._lines.popleft()
                    if isinstance(item, str):
                        batch.append(item)
                    else:
                        batch.append(_access_line(*item))
                        records = True
            except IndexError:
                pass
            if batch:
                text = "\n".join(batch) + "\n"
                if records:
                    # Redacting a line twice changes nothing: the finished lines in the
                    # batch come through unharmed.
                    text = (self._redactor or default_redactor()).redact(text)
                try:
                    self._stream.write(text)
                    self._stream.flush()
                except (OSError, ValueError):
                    pass  # stderr closed or gone: nothing better to do with a log line

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.flush()


class _LineHandler(logging.Handler):
    """Formats (after redaction) in the caller's thread; the writer does the I/O."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write(self.format(record))
        except Exception:
            self.handleError(record)


class AccessLog:
    """One JSON line per request, in the shape ``JsonFormatter`` gives a record, redacted
    by the writer's redactor."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer
        self._logger = logging.getLogger(ACCESS_LOGGER)

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        """Queue the line of one request; the writer renders and redacts it."""
        self._writer.write_record(time.time(), fields)


def _access_line(at: float, fields: dict[str, Any]) -> str:
    entry = {
        "time": _timestamp(at),
        "level": "INFO",
        "logger": ACCESS_LOGGER,
        "message": "request",
        **fields,
    }
    return _JSON.encode(entry)


_writer: LineWriter | None = None
_access_log: AccessLog | None = None


def _stop_writer() -> None:
    """Write out what is queued and stop the writer (at exit, or before replacing it)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


atexit.register(_stop_writer)


def configure_logging(level: str, state: GatewayState) -> None:
    """Send the gateway's logs, as JSON lines with secrets redacted, to stderr."""
    global _writer, _access_log
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    _stop_writer()
    redactor = install_redaction(state)
    _writer = LineWriter(sys.stderr, redactor=redactor)
    handler = _LineHandler(_writer)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _access_log = AccessLog(_writer)


def access_log() -> AccessLog | None:
    """The access log of the most recently configured gateway, if its level lets it write."""
    return _access_log if _access_log is not None and _access_log.enabled() else None


def flush_logs() -> None:
    """Write queued lines now (gunicorn's ``worker_exit`` hook, tests)."""
    if _writer is not None:
        _writer.flush()
