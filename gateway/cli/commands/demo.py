"""The whole product on one machine: ``drawbridge demo``."""

from __future__ import annotations

import click

from gateway.cli.base import domain_errors, main


@main.command()
@click.option(
    "--dir", "directory", default=".drawbridge", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--port", default=8080, show_default=True)
@click.option("--simulator-port", default=8090, show_default=True)
@click.option("--job-seconds", default=6.0, show_default=True)
def demo(directory: str, port: int, simulator_port: int, job_seconds: float) -> None:
    """Run the whole product on one machine: SQLite, the simulator, one gateway."""
    from gateway.cli.demo import run_demo

    with domain_errors():
        run_demo(directory, port, simulator_port, job_seconds)
