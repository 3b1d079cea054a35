"""The generation backend: the only code that talks to it, with the master credential.

``client`` is the proxy engine (every upstream request built from scratch, timeouts and
deadlines, ``UpstreamError``); ``credential`` watches whether the backend still accepts the
master credential; ``reconciler`` sweeps the ledger against the backend's jobs. A new
backend (another vendor's video API) lands here, behind the client's methods. It may import
``keys``, the settings and the request context, and nothing of the HTTP edge
(tests/test_layering.py).
"""

__all__ = ["client", "credential", "reconciler"]
