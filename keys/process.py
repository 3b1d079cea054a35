"""Per-process facts without a system call per use: the process id, and unique ids.

Code on the request path checks whether it runs in a forked gunicorn worker (to start its own
background threads there); ``os.getpid()`` is a system call each time, this is a read. Request
ids must be unique, not secret: they come from a generator private to this module, seeded
from the OS at import and again in every forked child, rather than from ``os.urandom``, whose
system call releases the GIL on every request. (Not the ``random`` module's shared generator:
anything that seeds it, a test tool for one, would make ids repeat.)
"""

from __future__ import annotations

import os
import random

_pid = os.getpid()
_ids = random.Random()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    _ids.seed()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_pid() -> int:
    """``os.getpid()``, kept up to date across forks."""
    return _pid


def unique_hex() -> str:
    """128 random bits as 32 hex digits, unique across processes and forks."""
    return f"{_ids.getrandbits(128):032x}"
