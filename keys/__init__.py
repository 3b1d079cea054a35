"""The domain: testers, keys, cohorts, quotas, approvals, usage, audit, leaks.

It never imports Flask nor anything of ``gateway`` (tests/test_layering.py checks). A
caller opens transactions on ``store.Store`` and uses the services it hands out; every
exception the domain raises on purpose is in ``errors``.

``__all__`` is the public surface: the modules the gateway, the CLI and the benchmarks may
import (tests/test_public_surface.py checks). The others are the domain's own machinery,
reached through the store: ``commit_notices`` and ``commit_stamp`` (when the hot read must
look again), ``ids``, ``lockdown`` (``tx.lockdown``), ``pages`` and ``text``.
"""

__all__ = [
    "admin_tokens",
    "anomalies",
    "approvals",
    "audit",
    "audit_export",
    "audit_signing",
    "cohorts",
    "counters",
    "db",
    "digests",
    "durations",
    "errors",
    "gate",
    "generations",
    "idempotency",
    "inventory",
    "keyformat",
    "leaks",
    "lifecycle",
    "migrate",
    "models",
    "policies",
    "process",
    "quotas",
    "reconcile",
    "roles",
    "share_links",
    "store",
    "testers",
    "usage",
    "usage_reports",
    "vault",
    "videos",
]
