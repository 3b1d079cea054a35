"""What operators watch: ``/healthz`` and ``/readyz`` (``health``), ``/metrics``
(``metrics``, summed across gunicorn workers) and the JSON access and server logs with
secrets redacted (``logs``). A new metric or probe lands here. It may import ``keys``,
``gateway.http``, the settings and the process state; never a plane
(tests/test_layering.py).
"""

__all__ = ["health", "logs", "metrics"]
