"""Schema migrations (alembic), runnable from code and from ``drawbridge db upgrade``.

Everything but ``db upgrade`` (and the demo, which makes its own database) refuses to start
on a database whose schema is behind: ``require_current_schema`` says so in one line instead
of a flood of 500s, and refuses a SQLite path whose file does not exist, which would
otherwise be created empty by the first connection (a typo in ``database.url``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from keys.commit_notices import NOTIFY_SQL
from keys.commit_stamp import CommitStamp
from keys.db import normalise_url
from keys.errors import DatabaseUnreachable, SchemaNotCurrent

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_HINT = "run `drawbridge db upgrade`"


@dataclass(frozen=True)
class Upgraded:
    """What ``upgrade`` did: the revision before (None: an empty database) and after."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> Upgraded:
    """Bring the schema up to ``revision``; returns the revisions before and after."""
    before = current_revision(engine)
    with engine.begin() as connection:
        config = _config()
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
    return Upgraded(before, current_revision(engine))


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def _head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def head_revision(engine: Engine | None = None) -> str | None:
    """The revision the code expects (the newest migration)."""
    return _head()


def is_ahead(revision: str | None) -> bool:
    """Whether ``revision`` is one this code does not know: a newer release migrated the
    database (migrations only add, so this code still works on it until it is replaced)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision is None:
        return False
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is None
    except CommandError:
        return True


def display_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, or None (another database, or in memory)."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def require_current_schema(url: str) -> None:
    """Raises SchemaNotCurrent unless the database at ``url`` exists and is at head;
    DatabaseUnreachable when it does not answer."""
    shown = display_url(url)
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise SchemaNotCurrent(
            f"the SQLite database {path} does not exist: check database.url "
            f"(DRAWBRIDGE_DATABASE_URL), or create it with `drawbridge db upgrade`"
        )
    engine = create_engine(normalise_url(url), poolclass=NullPool)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        raise DatabaseUnreachable(
            f"cannot reach the database at {shown} ({type(exc).__name__})"
        ) from None
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database at {shown} is not migrated (at {current or 'an empty schema'}, "
            f"head is {head}): {UPGRADE_HINT}"
        )
