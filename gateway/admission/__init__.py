"""Admission's machinery: what ``gateway.services.admission`` counts and limits with.

Rate limits (``limits``, on flask-limiter's storage, ``rate_storage``), the per-key bulkhead
of in-flight requests (``bulkhead``), anomaly detection run on the request path
(``anomalies``, with the rules in ``keys.leaks.anomalies``) and the admin alerts it sends
(``alerts``). The pipeline's order is in the service; a new counter, limit or detector
lands here. It imports only ``keys`` (and its libraries): the process state builds these
parts, the services drive them (tests/test_layering.py).
"""

__all__ = ["alerts", "anomalies", "bulkhead", "limits", "rate_storage"]
