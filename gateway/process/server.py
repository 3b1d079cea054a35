"""Serving under gunicorn from Python, so ``drawbridge serve`` needs no shell wrapper."""

from __future__ import annotations

import gc
import os
import runpy
import signal
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from gateway.observability.logs import flush_logs, to_json_lines
from gateway.observability.metrics import publish_all
from keys.records.usage import flush_buffers

# Set by ``drawbridge serve`` for its workers (gateway.services.doctor reads it).
WORKERS_VARIABLE = "DRAWBRIDGE_GUNICORN_WORKERS"


def flush_on_worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook: write the usage events, metrics and log lines the
    worker still holds as soon as it has answered its last request. (Interpreter exit does it
    again, but only once every request thread has ended; a thread stuck past the graceful
    timeout would otherwise take the batch down with the worker.)"""
    flush_buffers()
    publish_all()
    flush_logs()


def ignore_terminal_interrupt(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: workers ignore SIGINT and leave it to the master.

    Ctrl-C in a terminal signals the whole process group. A gthread worker then handles two
    quit signals at once (SIGINT from the terminal, SIGQUIT from its master), and the second
    handler can interrupt the first inside ThreadPoolExecutor.shutdown() and wait forever for
    the lock the first holds. The master's SIGQUIT alone stops the worker just as quickly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def settle_heap() -> None:
    """In a worker, once the application is built: move everything made so far (modules,
    the app, the engine, compiled statements: over 100,000 objects) out of the garbage
    collector's view, so its full collections, which a busy worker runs every few seconds,
    walk only what requests have made since (measured: ~40 ms per collection otherwise,
    paid inside a request)."""
    gc.collect()
    gc.freeze()


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's error and access logs as JSON lines, through the gateway's redaction.

    gunicorn logs some requests the application never sees (a header line without a colon,
    a control byte in the request line) and quotes them: without this, a key sent as
    ``Authorization Bearer drwb_...`` would reach the log in clear."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                to_json_lines(handler)


# Defaults for production; config/gunicorn.conf.py documents them and may override them.
DEFAULT_OPTIONS: dict[str, Any] = {
    "bind": "127.0.0.1:8080",
    "workers": 2,
    # gthread, answering gunicorn's own 400/414/431 in the OpenAI error shape.
    "worker_class": "gateway.process.worker.GatewayWorker",
    "threads": 8,
    "timeout": 120,
    "graceful_timeout": 30,
    "keepalive": 5,
    # gunicorn's defaults, stated: a request line up to 4 KiB (414 beyond), at most 100
    # header fields of 8 KiB each (431 beyond). Keys travel in a header, never the URL.
    "limit_request_line": 4094,
    "limit_request_fields": 100,
    "limit_request_field_size": 8190,
    # The gateway writes its own access log (JSON, redacted): gunicorn's would print
    # query strings, and a query string is where careless clients put keys.
    "accesslog": None,
    "errorlog": "-",
    # gunicorn 27 puts every instance's control socket at one path by default; several
    # gateways (or a gateway and the simulator) on one host would fight over it.
    "control_socket_disable": True,
    "worker_exit": flush_on_worker_exit,
    "post_worker_init": ignore_terminal_interrupt,
    # JSON and redaction for gunicorn's own lines too; a config file that sets its own
    # logger_class should subclass this one.
    "logger_class": GunicornLogger,
}


class Server(BaseApplication):  # type: ignore[misc]
    """A gunicorn application around an app factory, called once per worker."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._config_file = options.get("config")
        self._options = {k: v for k, v in options.items() if v is not None and k != "config"}
        super().__init__()

    def load_config(self) -> None:
        # Built-in defaults < the gunicorn config file < options given on the command line.
        # (BaseApplication has no config-file loader of its own: the file is run here.)
        settings = dict(DEFAULT_OPTIONS)
        if self._config_file:
            settings.update(runpy.run_path(self._config_file))
        settings.update(self._options)
        for name, value in settings.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)
        # The workers inherit it: `drawbridge --server URL doctor` reports how many count apart.
        os.environ[WORKERS_VARIABLE] = str(self.cfg.workers)

    def load(self) -> Flask:
        app = self._factory()
        settle_heap()
        return app


def serve(factory: Callable[[], Flask], **options: Any) -> None:
    """Run gunicorn in the foreground until it is stopped."""
    Server(factory, options).run()
