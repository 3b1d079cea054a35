"""Has anything been committed to this SQLite database since I last looked?

The hot path reads a key's state on every request. On SQLite that read is cheap in itself,
but each of its calls into the driver lets another request thread take the interpreter
lock, and under load those hand-offs cost several times the query (measured in
docs/benchmarks.md). So the hot read reuses its last row for as long as nothing has been
committed, and this module is how every process on the machine learns of a commit without
a system call: a shared, memory-mapped stamp next to the database file, which every write
transaction replaces with a fresh random value right after it ends.

Why random values and not a counter: processes write the stamp without a lock, so an
increment could be lost or go back to a value a reader has seen (A reads 7, B writes 8,
A writes 8). A new random 64-bit value differs from every earlier one, and a torn write
(two writers' bytes mixed) is just another new value. A reader reads the stamp *before*
its query and files the row under it; any commit after that query replaces the stamp, so
the row is never used again.

What the stamp cannot see: a write that did not go through ``keys.db`` (a hand-edited
database), or a writer killed between its commit and its stamp. Readers therefore also
bound a row's age (``keys.db.REUSE_SECONDS``). Only SQLite files get a stamp: every process
that writes a SQLite database shares its host. PostgreSQL, which other hosts write, has commit
notices and a write wait instead (``keys/commit_notices.py``).
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
from pathlib import Path

log = logging.getLogger("drawbridge.db")

STAMP_BYTES = 8
STAMP_SUFFIX = "-stamp"


class CommitStamp:
    """The stamp of one SQLite database file, mapped into this process."""

    def __init__(self, database_path: Path) -> None:
        self.path = database_path.with_name(database_path.name + STAMP_SUFFIX)
        # The stamp holds no secret; it takes the database file's permissions, so whoever
        # may write the database may write its stamp.
        mode = database_path.stat().st_mode & 0o666 if database_path.exists() else 0o644
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, mode)
        try:
            if os.fstat(descriptor).st_size < STAMP_BYTES:
                # Harmless when two processes create it at once: both extend it to the same
                # size with zero bytes, and neither truncates a value the other wrote.
                os.ftruncate(descriptor, STAMP_BYTES)
            self._map = mmap.mmap(descriptor, STAMP_BYTES)
        finally:
            os.close(descriptor)

    @classmethod
    def for_database(cls, database_path: str) -> CommitStamp | None:
        """The stamp of the database file at ``database_path``, or None when it cannot be
        mapped (then readers read the database every time)."""
        try:
            return cls(Path(database_path))
        except OSError as exc:
            log.warning("no commit stamp for %s (%s): hot reads are not reused", database_path, exc)
            return None

    def current(self) -> bytes:
        """The stamp now: a memory read, no system call, the interpreter lock kept."""
        return self._map[:STAMP_BYTES]

    def renew(self) -> None:
        """Say that something was (or may have been) committed."""
        self._map[:STAMP_BYTES] = secrets.token_bytes(STAMP_BYTES)

    def close(self) -> None:
        self._map.close()
