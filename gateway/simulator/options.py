"""SimulatorOptions: how the simulator behaves, from arguments or DRAWBRIDGE_SIM_* variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulator behaves; every field has a demo-friendly default."""

    api_key: str | None = None
    job_seconds: float = 2.0
    content_bytes: int = 1_048_576
    poll_after_ms: int = 200

    def __post_init__(self) -> None:
        """Reject values that would make the job clock or the content length meaningless."""
        for name in ("job_seconds", "content_bytes", "poll_after_ms"):
            if not getattr(self, name) >= 0:  # written this way to reject NaN too
                raise ValueError(f"{name} must be a non-negative number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SimulatorOptions:
        """Read DRAWBRIDGE_SIM_* variables; unset or empty ones keep their defaults."""
        defaults = cls()
        return cls(
            api_key=environ.get("DRAWBRIDGE_SIM_API_KEY") or None,
            job_seconds=_env_number(
                environ, "DRAWBRIDGE_SIM_JOB_SECONDS", float, defaults.job_seconds
            ),
            content_bytes=_env_number(
                environ, "DRAWBRIDGE_SIM_CONTENT_BYTES", int, defaults.content_bytes
            ),
            poll_after_ms=_env_number(
                environ, "DRAWBRIDGE_SIM_POLL_AFTER_MS", int, defaults.poll_after_ms
            ),
        )


def _env_number(
    environ: Mapping[str, str], name: str, parse: Callable[[str], _Number], default: _Number
) -> _Number:
    """Parse one numeric variable, naming it in the error so a bad deploy is easy to fix."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be a number, got {raw!r}") from error
