"""The domain: testers, keys, cohorts, quotas, approvals, usage, audit, leaks.

It never imports Flask nor anything of ``gateway`` (tests/test_layering.py checks). A
caller opens transactions on ``store.Store`` and uses the services it hands out; every
exception the domain raises on purpose is in ``errors``.

One sub-package per area, each saying what lands there: ``access`` (testers, keys, tokens,
roles, the hot read), ``limits`` (policies, quotas, counters), ``approvals`` (held requests,
share links), ``generations`` (the ledger, ownership, idempotency, reconciliation),
``records`` (usage and the audit trail), ``provenance`` (C2PA manifests on delivered
videos and identifying files) and ``leaks`` (scanning, anomalies, the kill switch).
At the top is the foundation they share: ``store``, ``db``, ``models``, ``migrate`` (and
``migrations``), ``errors``, ``durations`` and ``process``.

``__all__`` is the public surface: what the gateway, the CLI and the benchmarks may import
(tests/test_public_surface.py checks, and each sub-package has its own); ``text`` is there for
``mask_secrets``, which the edge applies to every error message. The others are the domain's
own machinery, reached through the store: ``commit_notices`` and ``commit_stamp`` (when the
hot read must look again), ``ids`` and ``pages``.
"""

__all__ = [
    "access",
    "approvals",
    "db",
    "durations",
    "errors",
    "generations",
    "leaks",
    "limits",
    "migrate",
    "models",
    "process",
    "provenance",
    "records",
    "store",
    "text",
]
