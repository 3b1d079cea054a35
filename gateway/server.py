"""Serving under gunicorn from Python, so ``drawbridge serve`` needs no shell wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

# Defaults for production; config/gunicorn.conf.py documents them and may override them.
DEFAULT_OPTIONS: dict[str, Any] = {
    "bind": "127.0.0.1:8080",
    "workers": 2,
    "worker_class": "gthread",
    "threads": 8,
    "timeout": 120,
    "graceful_timeout": 30,
    "keepalive": 5,
    # The gateway writes its own access log (JSON, redacted): gunicorn's would print
    # query strings, and a query string is where careless clients put keys.
    "accesslog": None,
    "errorlog": "-",
    # gunicorn 27 puts every instance's control socket at one path by default; several
    # gateways (or a gateway and the simulator) on one host would fight over it.
    "control_socket_disable": True,
}


class Server(BaseApplication):  # type: ignore[misc]
    """A gunicorn application around an app factory, called once per worker."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
        super().__init__()

    def load_config(self) -> None:
        config_file = self._options.pop("config", None)
        if config_file:
            self.load_config_from_file(config_file)
        for name, value in self._options.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)

    def load(self) -> Flask:
        return self._factory()


def serve(factory: Callable[[], Flask], **options: Any) -> None:
    """Run gunicorn in the foreground until it is stopped."""
    Server(factory, options).run()
