"""The ``drawbridge`` command. Each action calls the same domain method as the admin API.

Commands live in one module per group; importing them here attaches them to ``main``.
"""

from gateway.cli import (  # noqa: F401
    approvals_commands,
    audit_commands,
    key_commands,
    leaks_commands,
    people,
    program_commands,
    reconcile_commands,
    serving,
    system,
    usage_commands,
)
from gateway.cli.base import cli_actor, main

__all__ = ["cli_actor", "main"]
