"""SQLite's side of the store. Here: connections as the store sets them up (WAL,
``synchronous=FULL``), transactions begun explicitly, hot statements run on the sqlite3
connection. Beside: ``counts``, ``writers``, ``deferred`` (group commit), ``checkpointer``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.pool import StaticPool
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from clearance.store.statements import Prepared, json_dumps

#: WAL pages after which a commit also checkpoints. Above SQLite's default of 1000, so that fewer
#: decisions pay for one; the ``Checkpointer`` thread has copied most pages back by then.
WAL_AUTOCHECKPOINT_PAGES = 4000


def file_path(url: URL) -> str | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    db = url.database
    return None if not db or db == ":memory:" or url.query.get("mode") == "memory" else str(Path(db).expanduser())


def engine(url: URL, *, echo: bool) -> SAEngine:
    if file_path(url) is None:  # in memory: one connection holds the database, shared in turn (SqlStore)
        sa_engine = create_engine(url, echo=echo, poolclass=StaticPool, connect_args={"check_same_thread": False},
                                  json_serializer=json_dumps)  # fmt: skip
    else:
        Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        sa_engine = create_engine(url, echo=echo, connect_args={"timeout": 30}, pool_size=8, max_overflow=32,
                                  json_serializer=json_dumps)  # fmt: skip
    # A pool event only: no Connection events, which would put event dispatch on every
    # statement. Transactions are begun explicitly (see begin()).
    event.listen(sa_engine, "connect", _on_connect)
    return sa_engine


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling is off: it would BEGIN only before the first write,
    # too late for reads to share the writer's snapshot. read() and write() begin explicitly.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    _enable_wal(cur)
    cur.execute("PRAGMA synchronous=FULL")  # a decision survives power loss once evaluate returns
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.execute("PRAGMA foreign_keys=ON")
    # A batch is one transaction of nested savepoints, whose sub-journal SQLite would spill to a
    # temporary file that each batch creates and deletes: it is kept in memory (so are sort
    # tables: every sorting query of the store is bounded by a LIMIT or small).
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _enable_wal(cur: sqlite3.Cursor, timeout: float = 30.0) -> None:
    """Switch a fresh file to WAL, waiting out other connections doing the same: the switch
    needs an exclusive lock, and SQLite answers "database is locked" at once instead of calling
    the busy handler. Once switched, the mode is stored in the file and the pragma is a no-op."""
    locked = retry_if_exception(lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e))
    for attempt in Retrying(retry=locked, wait=wait_exponential(multiplier=0.001, max=0.05), stop=stop_after_delay(timeout),
                            reraise=True):  # fmt: skip
        with attempt:
            cur.execute("PRAGMA journal_mode=WAL")


def begin(conn: Connection, *, immediate: bool) -> None:
    """Open the SQLite transaction of ``conn`` (inside ``conn.begin()``): ``BEGIN IMMEDIATE``
    takes the database's writer lock at once, so a writer's reads are already serialised.
    Issued on the driver connection: pysqlite's ``do_begin`` does nothing, and a "begin" event
    listener would cost event dispatch on every statement. SQLAlchemy's commit ends it."""
    sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    try:
        conn.connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]
    except sqlite3.Error as exc:  # e.g. "database is locked" after busy_timeout: as SQLAlchemy would raise it
        raise sa_exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


def run(prepared: Prepared, raw: sqlite3.Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> sqlite3.Cursor:
    """As :meth:`Prepared.execute`, straight on the sqlite3 connection of the same transaction:
    on a decision's statements SQLAlchemy's execution context and result set-up cost more than
    SQLite itself. Errors are raised as SQLAlchemy would raise them."""
    try:
        if isinstance(params, dict) or params is None:
            return raw.execute(prepared.sql, prepared.values(params or {}))
        return raw.executemany(prepared.sql, [prepared.values(p) for p in params])
    except sqlite3.Error as exc:
        raise sa_exc.DBAPIError.instance(prepared.sql, params, exc, sqlite3.Error) from exc

