"""What auditors read: ``usage`` (one event per tester request, buffered), ``usage_reports``
(daily totals and exports), ``audit`` (the hash-chained trail and its checkpoints),
``audit_signing`` (Ed25519 checkpoint signatures), ``audit_export`` (offline verification)
and ``inventory`` (key counts for metrics). A new record or report lands here. It imports
only the domain's foundation.
"""

__all__ = ["audit", "audit_export", "audit_signing", "inventory", "usage", "usage_reports"]
