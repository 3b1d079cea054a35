"""The hot read (``keys.db.PreparedRead``) when PostgreSQL goes away and comes back.

A private cluster (initdb + pg_ctl on a free port) is stopped abruptly and started again;
the live version, through gunicorn, is tests/integration/test_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import literal, select
from sqlalchemy.exc import OperationalError

from keys.db import Database
from tests.private_services import PrivatePostgres

pytestmark = pytest.mark.fault

ONE = select(literal(1).label("one"))


@pytest.fixture
def database(private_postgres: PrivatePostgres) -> Iterator[Database]:
    database = Database(private_postgres.url(), pool_size=5)
    yield database
    database.dispose()


def test_a_server_that_is_down_is_sqlalchemys_operational_error(
    database: Database, private_postgres: PrivatePostgres
) -> None:
    read = database.prepared(ONE)
    assert read.first().one == 1
    private_postgres.stop()
    try:
        # Both the pooled connection that died and a new one that cannot be opened: the
        # error the gateway maps to 503, never the driver's own (which would be a 500).
        for _ in range(3):
            with pytest.raises(OperationalError):
                read.first()
    finally:
        private_postgres.start()
    assert read.first().one == 1


def test_one_dead_connection_retires_the_whole_pool(
    database: Database, private_postgres: PrivatePostgres
) -> None:
    read = database.prepared(ONE)
    held = [database.engine.raw_connection() for _ in range(4)]
    for connection in held:
        connection.close()
    assert database.engine.pool.checkedin() == 4  # type: ignore[attr-defined]
    private_postgres.stop()
    private_postgres.start()
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(read.first().one)
        except OperationalError:
            outcomes.append("failed")
    # The first read finds its connection dead; the three others pooled with it are
    # retired with it instead of failing one request each.
    assert outcomes == ["failed", 1, 1, 1, 1]
