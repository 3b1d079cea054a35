"""Schema migrations (alembic), runnable from code and from ``drawbridge db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from keys.commit_notices import NOTIFY_SQL
from keys.commit_stamp import CommitStamp

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``."""
    with engine.begin() as connection:
        config = _config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        # A migration writes past keys.db's sessions: say so to the running gateways too.
        stamp = CommitStamp.for_database(database)
        if stamp is not None:
            stamp.renew()
            stamp.close()
    elif engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text(NOTIFY_SQL))


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(engine)).get_current_head()
