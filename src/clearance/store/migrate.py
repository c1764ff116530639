"""Schema migrations with Alembic, run on open so an upgraded package finds its schema ready."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from clearance.store.sqlite import begin as begin_sqlite

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

#: The newest revision in migrations/versions; a test keeps it equal to Alembic's head. Knowing
#: it without importing Alembic keeps opening an up-to-date store (every CLI call) fast.
HEAD = "0008"

# Alembic keeps its running context in module globals, so two threads may not migrate at once.
_MIGRATING = threading.Lock()
# Key of the PostgreSQL advisory lock that serialises migrations between processes.
_PG_LOCK_KEY = 0x636C6561  # "clea"


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return _revision(conn)


def head_revision() -> str | None:
    """Alembic's own view of the head (loads the scripts; tests compare it with HEAD)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema; a no-op when it is there already.

    Safe when several threads or processes open the same fresh database at once: migrations run
    under the database's writer lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
    PostgreSQL), and the revision is checked again once the lock is held.
    """
    if current_revision(engine) == HEAD:
        return
    from alembic import command

    with _MIGRATING, engine.connect() as conn:
        # The store's connections sort in memory (see ``clearance.store.sqlite``); an index built
        # on a large table is sorted on disk instead, and the connection set back before reuse.
        raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA temp_store=FILE")
        try:
            with conn.begin():
                if raw is not None:
                    begin_sqlite(conn, immediate=True)  # the store's writer lock, taken at once
                elif conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                if _revision(conn) == HEAD:
                    return
                cfg = alembic_config(engine)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            if raw is not None:
                raw.execute("PRAGMA temp_store=MEMORY")
