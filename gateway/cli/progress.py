"""Progress lines for long CLI jobs (exports, prunes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

# At most one progress line per this many seconds: enough to see a long job move.
PROGRESS_EVERY = 1.0


class Progress:
    """Progress lines on stderr for long jobs: with ``--progress``, or by default when stderr
    is a terminal. Never on stdout, which may be the export itself."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last: float | None = None

    def update(self, message: str, *, final: bool = False) -> None:
        now = time.monotonic()
        due = self._last is None or now - self._last >= PROGRESS_EVERY
        if self.enabled and (final or due):
            self._last = now
            click.echo(message, err=True)


def progress_option(function: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress lines on stderr (default: when stderr is a terminal).",
    )(function)
