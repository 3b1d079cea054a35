"""Gateways beyond the shared ``live_gateway``: several gunicorn instances on one database,
with a chosen number of workers, for the tests of what must hold across processes."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from keys.db import normalise_url
from tests.helpers import free_port
from tests.integration.live import LiveGateway, LiveSimulator, start_gateway


@contextlib.contextmanager
def gateway_fleet(
    simulator: LiveSimulator,
    tmp: Path,
    database_url: str,
    *,
    instances: int,
    workers: int,
    migrate: bool = True,
    **settings: str,
) -> Iterator[list[LiveGateway]]:
    """``instances`` gateways of ``workers`` workers each, sharing ``database_url``, with one
    admin token made through the CLI. ``settings`` are extra ``DRAWBRIDGE_*`` variables."""
    gateways = [
        LiveGateway.before(
            simulator, database_url, free_port(), tmp / f"gateway-{index}.log", **settings
        )
        for index in range(instances)
    ]
    first = gateways[0]
    if migrate:
        first.cli("db", "upgrade")
    token = first.cli(
        "tokens", "create", "--name", f"fleet admin {secrets.token_hex(3)}", "--role", "admin",
        "--json",
    )  # fmt: skip
    try:
        for index, gateway in enumerate(gateways):
            gateway.admin_token, gateway.admin_token_id = token["secret"], token["id"]
            instance_tmp = tmp / f"instance-{index}"
            instance_tmp.mkdir(exist_ok=True)
            port = int(gateway.base.rsplit(":", 1)[1])
            gateway.process = start_gateway(gateway, port, instance_tmp, workers=workers)
        yield gateways
    finally:
        for gateway in gateways:
            gateway.close_clients()
            if gateway.process is not None:
                gateway.process.stop()


def query(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of a read-only query against a live gateway's database."""
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params))
    finally:
        engine.dispose()
