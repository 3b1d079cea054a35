"""The use cases, one module per feature, with no Flask in them (tests/test_layering.py).

Each function takes the process's ``GatewayState`` (and, for a tester request, its
``RequestContext``) explicitly, does the work with the domain (``keys``) and the backend
(``gateway.upstream.client``), and raises domain or upstream exceptions that only
gateway/http/errors.py turns into HTTP. A blueprint parses a request, calls one of these and
renders the result; a CLI command calls the same function.

* ``admission``: who is calling, and may this request go on (the pipeline, top to bottom)
* ``generations``: policy, quota, hold or forward, and the ledger of a creation
* ``videos``: a tester's videos: read, list, delete, download
* ``approvals``: an approver's decision, carried out
* ``sharing``: share requests and what a public link opens
* ``provenance``: a signed C2PA manifest on each video that leaves, and identify
* ``doctor``: a deployment checked, each finding with its fix (``drawbridge doctor``)

Leak response (``keys.leaks.leaked_keys``), key lifecycle (``keys.access.lifecycle``) and
the usage reports (``keys.records.usage_reports``) need no backend, so the domain's services
serve them directly.
"""

__all__ = ["admission", "approvals", "doctor", "generations", "provenance", "sharing", "videos"]
