"""What the worker's event loop asks of the application before a request reaches a thread:
the door (gateway/process/door.py) refuses a blocked address's flood with these, and the
application (gateway/fast_refusal.py) provides them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

# The Flask app's extension the worker finds them under.
EXTENSION = "drawbridge.door"


@dataclass(frozen=True)
class DoorRefusals:
    armed: Callable[[], bool]
    """Whether the door looks at requests at all now (an address is held blocked)."""
    spared: Callable[[str | None], bool]
    """Whether the ``Authorization`` header names a key the block never refuses."""
    answer: Callable[[WSGIEnvironment, StartResponse], Iterable[bytes] | None]
    """The refusal's body, with ``start_response`` called; None (nothing done) to decline."""


__all__ = ["EXTENSION", "DoorRefusals"]
