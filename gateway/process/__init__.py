"""How the gateway runs as a server: ``server`` (gunicorn with Drawbridge's defaults, the
worker hooks that flush usage and logs) and ``worker`` (gthread, with gunicorn's own error
answers in the one error shape). The entry points users name stay at the top of the package:
``gateway.wsgi:app`` and ``gateway.gunicorn_conf``. It may import ``keys``, ``gateway.http``
and ``gateway.observability``; the CLI starts it (tests/test_layering.py).
"""

__all__ = ["server", "worker"]
