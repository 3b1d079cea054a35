"""HTTP plumbing every blueprint shares: who is calling, the request, the one error shape.

``auth`` (the ``require_tester`` and ``require_role`` decorators, the edge's half of
admission), ``current`` (this app's state and this request's context through Flask),
``errors`` (the only translation of exceptions into the OpenAI error shape), ``inputs``
(bodies, query strings, chunked uploads) and ``paths`` (path tricks refused). It may import
``keys``, ``gateway.services``, ``gateway.admission`` and ``gateway.upstream`` (to name their
refusals), the context and the state; no blueprint (tests/test_layering.py).
"""

__all__ = ["auth", "current", "errors", "inputs", "paths"]
