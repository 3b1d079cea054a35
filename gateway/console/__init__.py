"""The web console (``/console/``) for approvers, admins, auditors and testers.

Server-rendered pages over the same domain services as the admin API and the CLI.
"""

from __future__ import annotations

from gateway.console import (  # noqa: F401  (each module registers its routes)
    approvals,
    errors,
    keys_pages,
    me,
    program,
    records,
    signing_in,
)
from gateway.console.blueprint import bp

__all__ = ["bp"]
