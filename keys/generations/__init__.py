"""What testers create: ``ledger`` (a generation's cost, its quota reservation, hold or
submission, and its settlement), ``videos`` (who owns which backend object),
``idempotency`` (``Idempotency-Key`` claims) and ``reconcile`` (reservations whose request
never finished, settled against the backend). A new kind of generation lands here. It may
import the domain's foundation, ``keys.access``, ``keys.limits``, ``keys.approvals`` and
``keys.records``.
"""

__all__ = ["idempotency", "ledger", "reconcile", "videos"]
