"""The HTTP edge: the app factory, the proxy to the generation backend, the blueprints of
the tester, admin and auditor APIs, the console, the CLI and the built-in simulator.

Entry points: ``gateway.wsgi:app`` (gunicorn), ``gateway.app.create_app``, the
``drawbridge`` command (``gateway.cli.main``) and ``gateway.simulator``. docs/design.md
has the layout.
"""
