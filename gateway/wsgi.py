"""WSGI entry point: ``gunicorn 'gateway.wsgi:app'``; settings from file and environment.

``drawbridge serve`` is the first way to serve the gateway: it checks the settings and the
database once, prepares the metrics spool before the workers fork and installs the worker
hooks (gateway/process/server.py). Under plain gunicorn this module does what it can from inside
each worker: a missing or unmigrated database stops the server with one line (gunicorn's
"app failed to load", not a traceback per worker), and without ``metrics_dir`` the workers
of one gunicorn master share a spool named after it, so ``/metrics`` adds up all of them.
For the worker hooks (a stopping worker's usage events and metrics written as soon as it has
answered its last request, not only at interpreter exit) add ``-c python:gateway.gunicorn_conf``.
"""

import gc

from gunicorn.errors import AppImportError

from gateway.app import create_app
from gateway.observability.metrics import share_with_sibling_workers
from keys.errors import SchemaNotCurrent

try:
    app = create_app()
except SchemaNotCurrent as exc:
    raise AppImportError(f"drawbridge: {exc.message}") from None
share_with_sibling_workers(app)
# What ``drawbridge serve`` does once a worker has built the app (gateway.process.server's
# settle_heap): what exists now is kept out of the garbage collector's full collections.
gc.collect()
gc.freeze()
