"""The ``drawbridge`` command. Each action calls the same domain method as the admin API.

Commands live in ``gateway/cli/commands/``, one module per group named after it
(``base.COMMAND_MODULES``); they are imported when a command runs, not for ``--help``.
"""

from gateway.cli.base import cli_actor, main

__all__ = ["cli_actor", "main"]
