"""The built-in video backend simulator: ``drawbridge simulator``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import click

from gateway.cli.base import main


@main.command()
@click.option("--bind", default="127.0.0.1:8090", show_default=True)
@click.option(
    "--api-key",
    envvar="DRAWBRIDGE_SIM_API_KEY",
    default=None,
    help="Credential the simulator requires (default: none).",
)
@click.option("--job-seconds", type=float, default=None, help="Time a job takes.")
@click.option("--content-bytes", type=int, default=None, help="Size of a video's content.")
def simulator(
    bind: str, api_key: str | None, job_seconds: float | None, content_bytes: int | None
) -> None:
    """Serve the built-in video backend simulator."""
    from gateway.process.server import serve as run
    from gateway.simulator import SimulatorOptions, create_simulator_app

    options = SimulatorOptions.from_env(os.environ)
    overrides: dict[str, Any] = {
        "api_key": api_key,
        "job_seconds": job_seconds,
        "content_bytes": content_bytes,
    }
    options = dataclasses.replace(options, **{k: v for k, v in overrides.items() if v is not None})
    run(lambda: create_simulator_app(options), bind=bind, workers=1, threads=16)
