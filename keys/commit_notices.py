"""Has anything the hot read reads been committed to this PostgreSQL database since I looked?

The PostgreSQL counterpart of ``keys/commit_stamp.py``. Every write transaction through
``keys.db`` that changes a table the hot read reads (keys, testers, policies, overrides, the
kill switch, proof-key bindings, videos) sends ``NOTIFY drawbridge_commit`` inside the
transaction, which PostgreSQL delivers to every listening session once the commit is durable.
Each process holds one listening connection on a thread of its own; every notice, and every
loss or regain of that connection, moves the process's *generation* on. A reader notes the
generation before its query and files the row under it; a later notice makes the row stale.

A notice reaches other hosts *after* the commit, not before the writer's call returns, so it
cannot by itself keep "in force everywhere before the call returns". What does is the other
half, in ``keys.db``: a reused row is at most ``REUSE_SECONDS`` old (timed from before its
query was sent), and a write transaction that can take access away waits ``REUSE_SECONDS``
after its commit before it returns. By then every row read before the commit, on any host,
has aged out. The notices make the common case fast (other processes re-read within
milliseconds, also after changes that grant access), the bound makes the promise.

Fail closed: while the listening connection is down, or has not answered a heartbeat for
``HEARTBEAT_SECONDS`` x 3, ``current()`` is None and nothing is reused (every request reads,
as before reuse existed); a reconnect moves the generation on, so nothing read before the
outage is reused after it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from keys.process import current_pid

log = logging.getLogger("drawbridge.db")

CHANNEL = "drawbridge_commit"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"
# How often a quiet listening connection proves it still answers.
HEARTBEAT_SECONDS = 1.0
RECONNECT_SECONDS = 0.5


class CommitNotices:
    """One process's listening connection to a PostgreSQL database, on a daemon thread.

    ``connect`` opens a new DBAPI (psycopg) connection. The thread starts on the first
    ``current()`` in a process, so a gunicorn master that only checked its settings holds
    no listener, and a forked worker starts its own.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._generation = 0
        self._live = False
        self._heard = 0.0
        self._pid = 0
        self._closed = threading.Event()
        self._starting = threading.Lock()
        self._connection: Any = None

    def current(self) -> int | None:
        """The generation now, or None when notices may be missed (then nothing is reused)."""
        if self._pid != current_pid():
            self._start()
            return None
        if not self._live or time.monotonic() - self._heard > 3 * HEARTBEAT_SECONDS:
            return None
        return self._generation

    def wait_until_live(self, timeout: float) -> bool:
        """Start listening (if not yet) and wait until notices are received (for tests)."""
        deadline = time.monotonic() + timeout
        while self.current() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop listening: the thread ends within ``HEARTBEAT_SECONDS`` and closes its
        connection; nothing is reused from now on."""
        self._closed.set()
        self._live = False

    def _start(self) -> None:
        with self._starting:
            if self._pid == current_pid() or self._closed.is_set():
                return
            # In a forked child the parent's thread does not exist and its connection is
            # the parent's: begin afresh.
            self._live = False
            self._connection = None
            thread = threading.Thread(
                target=self._listen, name="drawbridge-commit-notices", daemon=True
            )
            self._pid = current_pid()
            thread.start()

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                self._listen_once()
            except Exception as exc:  # any failure means: stop reusing
                self._live = False
                if not self._closed.is_set():
                    log.warning("commit notices lost (%s): hot reads are not reused", exc)
            finally:
                self._live = False
                connection, self._connection = self._connection, None
                if connection is not None:
                    # It is gone either way.
                    with contextlib.suppress(Exception):
                        connection.close()
            self._closed.wait(RECONNECT_SECONDS)

    def _listen_once(self) -> None:
        connection = self._connect()
        self._connection = connection
        connection.autocommit = True
        connection.execute(f"LISTEN {CHANNEL}")
        # Anything read before this point may have missed a notice: a new generation.
        self._renew()
        self._heard = time.monotonic()
        self._live = True
        while not self._closed.is_set():
            for _notice in connection.notifies(timeout=HEARTBEAT_SECONDS):
                self._renew()
                self._heard = time.monotonic()
            if self._closed.is_set():
                return
            connection.execute("SELECT 1")
            self._heard = time.monotonic()

    def _renew(self) -> None:
        # Only this thread writes the generation: a plain increment loses nothing.
        self._generation += 1
