"""The ``drawbridge`` command. Each action calls the same domain method as the admin API.

Commands live in one module per group; importing them here attaches them to ``main``.
"""

from gateway.cli import audit_commands, key_commands, people, serving, system  # noqa: F401
from gateway.cli.base import cli_actor, main

__all__ = ["cli_actor", "main"]
