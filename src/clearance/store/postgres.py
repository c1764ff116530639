"""PostgreSQL's side of the store (and of any server database): its pool, its writer lock, its
snapshot reads, and the announcement of approval changes to every replica (NOTIFY/LISTEN)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, create_engine, event, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.engine import Engine as SAEngine

from clearance.store import schema as t
from clearance.store.statements import json_dumps

log = logging.getLogger("clearance.store")

_LOCK_HEAD = select(t.chain_head.c.id).where(t.chain_head.c.id == 1).with_for_update()


#: Connections each process keeps (pool, then overflow), unless the environment says otherwise:
#: replicas x workers x (pool + overflow + 1 listener) must fit the server's max_connections.
POOL_SIZE, MAX_OVERFLOW = 8, 16


def _setting(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a whole number of connections, 0 or more, not {raw!r}")
    return value


def engine(url: URL, *, echo: bool) -> SAEngine:
    size = _setting("CLEARANCE_PG_POOL_SIZE", POOL_SIZE)
    overflow = _setting("CLEARANCE_PG_MAX_OVERFLOW", MAX_OVERFLOW)
    sa_engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=max(size, 1), max_overflow=overflow,
                              json_serializer=json_dumps)  # fmt: skip
    event.listen(sa_engine, "before_cursor_execute", _send_queued_first)
    event.listen(sa_engine, "commit", _send_queued_first)  # a safety net: the store sends before it commits
    event.listen(sa_engine, "rollback", Pipeline.discard)
    return sa_engine


_LOCK_SQL: dict[Any, tuple[str, dict[str, Any]]] = {}


def lock_writers(conn: Connection) -> None:
    """The store's writer lock: the audit chain's head row, which every write transaction
    appends to anyway, locked until the transaction ends. Queued (see :class:`Pipeline`): it
    travels with the transaction's first read, whose answer waits for the lock anyway."""
    found = _LOCK_SQL.get(conn.dialect)
    if found is None:
        compiled = _LOCK_HEAD.compile(dialect=conn.dialect)
        found = _LOCK_SQL[conn.dialect] = (compiled.string, dict(compiled.params))
    pipe = Pipeline.of(conn)
    pipe.queue(*found, write=False)
    pipe.locked = True


_COMMIT = "COMMIT"


class Pipeline:
    """The statements of a write transaction whose answers nobody reads (the decision's
    inserts, the chain head's move, savepoints, the writer lock), queued and sent together with
    the next statement that is read, or at the end of each operation, in one round trip
    (psycopg's pipeline mode). Each round trip is paid while the writer lock is held, so
    fewer of them is what lets replicas take turns faster.

    Errors of queued statements surface when they are sent: :meth:`send` is called before a
    savepoint is released and before the commit, so an operation's failure is still its own.
    Anything run on the connection through SQLAlchemy sends the queue first (an engine event),
    so statements always run in the order they were issued."""

    __slots__ = ("conn", "known", "locked", "queued", "raw", "writes")

    _KEY = "clearance_pipeline"

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.raw: Any = conn.connection.dbapi_connection
        self.queued: list[tuple[str, Any]] = []
        self.writes = False  # whether a write is queued (not only savepoints and the lock)
        self.locked = False  # whether this transaction asked for the writer lock
        #: (policy head, kill switch count, chain tip) as this transaction knows them, shared by
        #: the operations of a batch: under the writer lock only this transaction moves them.
        self.known: tuple[int, int, tuple[int, str]] | None = None

    @classmethod
    def of(cls, conn: Connection) -> Pipeline:
        """The pipeline of ``conn``'s current transaction (made on first use)."""
        pipe = conn.info.get(cls._KEY)
        if pipe is None or pipe.conn is not conn:
            pipe = conn.info[cls._KEY] = cls(conn)
        return pipe

    @classmethod
    def discard(cls, conn: Connection) -> None:
        """Forget what is queued (the transaction is rolled back, or over)."""
        conn.info.pop(cls._KEY, None)

    def queue(self, sql: str, params: Any, *, write: bool = True) -> None:
        self.queued.append((sql, params))
        self.writes = self.writes or write

    def commit(self) -> None:
        """Send what is queued and COMMIT, in one round trip. The driver then finds no
        transaction open, so SQLAlchemy's own commit that follows sends nothing."""
        self.send(_COMMIT)

    def send(self, sql: str | None = None, params: Any = None) -> Any:
        """Send what is queued, then ``sql`` if given, in one round trip; the cursor of ``sql``."""
        queued, self.queued = self.queued, []
        self.writes = False
        if sql is None and not queued:
            return None
        raw = self.raw
        last = sql
        try:
            if len(queued) + (sql is not None) == 1:  # one statement: no pipeline needed
                cur = raw.cursor()
                last, p = queued[0] if sql is None else (sql, params)
                cur.execute(last, p)
                return cur
            with raw.pipeline():
                cur = raw.cursor()
                for last, p in queued:
                    cur.execute(last, p)
                if sql is not None:
                    last = sql
                    cur = raw.cursor()
                    cur.execute(sql, params)
            return cur if sql is not None else None
        except Exception as exc:
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            dialect = self.conn.dialect
            invalidated = dialect.is_disconnect(exc, raw, None)
            if invalidated:
                self.conn.invalidate(exc)
            raise sa_exc.DBAPIError.instance(last, None, exc, psycopg.Error, connection_invalidated=invalidated,
                                             dialect=dialect) from exc  # fmt: skip


def _send_queued_first(conn: Connection, *_: Any) -> None:
    pipe = conn.info.get(Pipeline._KEY)
    if pipe is not None and pipe.queued:
        pipe.send()


def snapshot(conn: Connection) -> Connection:
    """``conn`` set to read one consistent snapshot. PostgreSQL's default READ COMMITTED would
    let each statement see newer commits, so that, for example, verifying the audit chain while
    others append would read the events, then a newer chain head, and report tampering that is
    not there. (SQLite's transactions read one snapshot by themselves.)"""
    return conn.execution_options(isolation_level="REPEATABLE READ")


#: The channel on which a committed change of an approval's status is announced (payload: its id).
APPROVALS_CHANNEL = "clearance_approvals"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def notify_approval(conn: Connection, approval_id: str) -> None:
    """Announce, when this transaction commits (and only then), that an approval changed."""
    conn.execute(_NOTIFY, {"channel": APPROVALS_CHANNEL, "payload": approval_id})


class ApprovalListener:
    """A thread that LISTENs on :data:`APPROVALS_CHANNEL` over a connection of its own and calls
    ``on_change(approval_id)`` for each announcement, so that a waiter on any replica wakes when
    another resolves. It reconnects by itself (every second) while the database is away; what
    changed meanwhile is seen by the waiters' own polling, which stays as a safety net."""

    def __init__(self, url: URL, on_change: Callable[[str], None]) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_change = on_change
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in force
        self._thread = threading.Thread(target=self._run, name="clearance-approval-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {APPROVALS_CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._on_change(note.payload)
            except psycopg.Error:
                log.warning("approval listener lost the database; reconnecting", exc_info=False)
            finally:
                self.listening.clear()
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
