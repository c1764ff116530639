"""The store on SQLAlchemy Core: SQLite (embedded default) or PostgreSQL, same code.

Writes are serialised (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's lock of the audit chain's
head row): that makes rate-limit counts, approval resolution and execution claims exact without
retries, and keeps the audit chain linear.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from clearance.store import postgres, sqlite
from clearance.store import schema as t
from clearance.store import statements as st
from clearance.store.migrate import upgrade
from clearance.store.sqlite.checkpointer import Checkpointer
from clearance.store.sqlite.counts import UsageCounts
from clearance.store.sqlite.deferred import DeferredCommits
from clearance.store.sqlite.kept import KeptConnection
from clearance.store.writers import WriterQueue
from clearance.store.statements import Prepared, bind_processor
from clearance.store.transaction import AppendHook, SqlTx


def _savepoint_sql(depth: int) -> tuple[str, str, str]:
    name = f"clearance_{depth}"
    return f"SAVEPOINT {name}", f"ROLLBACK TO SAVEPOINT {name}", f"RELEASE SAVEPOINT {name}"


_SAVEPOINTS = tuple(_savepoint_sql(depth) for depth in range(8))


class SqlStore:
    """Owns the database connection pool and hands out transactions."""

    def __init__(self, url: str, *, migrate: bool = True, echo: bool = False) -> None:
        self.url = url
        self._prepared: dict[Any, Prepared] = {}  # hot statements compiled for this store's dialect
        self._batch = threading.local()  # .conn: the connection of this thread's open batch
        sa_url = make_url(url)
        self.dialect = sa_url.get_backend_name()
        on_sqlite = self.dialect == "sqlite"
        self.engine = sqlite.engine(sa_url, echo=echo) if on_sqlite else postgres.engine(sa_url, echo=echo)
        # SQLite only: in-memory rate-limit counts and, on a file, its WAL checkpointer and the
        # commits of batch(sync=False) (see sync()). Every store queues its writers.
        self._counts = UsageCounts(bind_processor(t.UTCDateTime(), self.engine.dialect)) if on_sqlite else None
        path = sqlite.file_path(sa_url) if on_sqlite else None
        self._checkpointer = Checkpointer(path) if path else None
        self._writers = WriterQueue(path)
        # An in-memory SQLite database lives in one connection, which every transaction shares
        # in turn (held by this lock; a read inside this thread's own write reads through it).
        self._solo = threading.RLock() if on_sqlite and path is None else None
        self._solo_conn = threading.local()
        self._deferred = DeferredCommits(self.engine, path) if path else None
        # The connection that durable writes use while they hold the writer queue (SQLite file).
        self._kept = KeptConnection(self.engine) if path else None
        #: Called inside each write transaction with the events it appends (the engine signs
        #: checkpoints of the audit chain here); the store itself knows nothing of them.
        self.on_append: list[AppendHook] = []
        if migrate:
            upgrade(self.engine)
        # The hot statements compiled now, not by the first decision (SQLAlchemy's compiler
        # costs tens of milliseconds for them all).
        for stmt, keys in st.HOT.items():
            self._prepared[stmt] = Prepared(stmt, self.engine.dialect, keys)

    @contextmanager
    def read(self) -> Iterator[SqlTx]:
        """A read transaction over one consistent snapshot (see :func:`postgres.snapshot`)."""
        deferred = self._deferred
        if deferred is not None and deferred.synced < deferred.unsynced:
            self.sync()  # never show this process's readers a commit that is not durable yet
        if self._solo is not None:
            with self._solo:
                joined = self._solo_conn.__dict__.get("conn")
                if joined is not None:  # inside this thread's write: the one connection is in it
                    yield SqlTx(joined, self._prepared)
                    return
                with self.engine.connect() as conn, conn.begin():
                    sqlite.begin(conn, immediate=False)
                    yield SqlTx(conn, self._prepared)
            return
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = postgres.snapshot(conn)
            with conn.begin():
                if self.dialect == "sqlite":
                    sqlite.begin(conn, immediate=False)
                yield SqlTx(conn, self._prepared)

    @contextmanager
    def write(self, *, sync: bool = True, blocking: bool = True) -> Iterator[SqlTx]:
        """A write transaction that holds the store's single writer lock until it ends. Inside
        :meth:`batch`, on the batch's thread, it is a savepoint of the batch's transaction: its
        writes are kept or undone on their own and become durable with the batch's commit.

        ``sync=False`` is for :meth:`batch` only (see there). ``blocking=False`` raises
        :class:`WouldBlock`, before anything is done, when another writer queued on this store
        holds it (an event loop must not wait for a lock)."""
        joined = self._batch.__dict__.get("conn")
        if joined is not None:
            with self._savepoint(joined):
                yield SqlTx(joined, self._prepared, self._counts, self.on_append)
            return
        deferred = None if sync else self._deferred
        queue = self._writers
        queued = queue.enter(blocking)
        try:
            # Writes run on a connection kept for them (on a SQLite file), used only while this
            # process's writer queue is held (so by one thread at a time); commits that do not
            # wait for the disk, on one kept for those. Without the queue (it could not be
            # opened) a write takes a connection from the pool and waits for the disk. An
            # in-memory store has one connection, taken in turn (``_solo``).
            kept, deferring = None, False
            if queued:
                if deferred is not None:
                    kept = deferred.connection()
                    deferring = kept is not None
                if kept is None and self._kept is not None:
                    kept = self._kept.connection()
            with self._solo or nullcontext(), nullcontext(kept) if kept is not None else self.engine.connect() as conn:
                try:
                    with conn.begin():
                        if self.dialect == "sqlite":
                            sqlite.begin(conn, immediate=True)
                        else:
                            postgres.lock_writers(conn)
                        self._solo_conn.conn = conn
                        try:
                            yield SqlTx(conn, self._prepared, self._counts, self.on_append)
                        finally:
                            self._solo_conn.conn = None
                        if self.dialect == "postgresql":
                            postgres.Pipeline.of(conn).commit()  # with what is queued
                    if deferring:
                        deferred.unsynced += 1  # type: ignore[union-attr]  # under the writer lock: counted in order
                except BaseException:
                    if self._counts is not None:  # rolled back (or not known to be committed)
                        self._counts.reset()
                    raise
                finally:
                    if self.dialect == "postgresql":
                        postgres.Pipeline.discard(conn)
        finally:
            if queued:
                queue.exit()
        if self._checkpointer is not None:
            self._checkpointer.committed()

    @property
    def writers(self) -> WriterQueue:
        """The queue this store's writers line up in (for writes made on connections of their own)."""
        return self._writers

    @property
    def defers_sync(self) -> bool:
        """Whether ``batch(sync=False)`` commits without waiting for the disk (a SQLite file)."""
        return self._deferred is not None and self._deferred.wal_mode is not False

    @contextmanager
    def batch(self, *, sync: bool = True, blocking: bool = True) -> Iterator[SqlTx]:
        """One write transaction that the :meth:`write` calls of this thread join, each as a
        savepoint, until it commits: group commit. Each operation sees the writes of the ones
        before it, one that raises undoes only its own writes, and all become durable with one
        commit when the block ends. Nobody may be told an outcome before that commit.

        With ``sync=False`` (on a SQLite file; elsewhere it changes nothing) the commit does not
        wait for the disk, so the next batch can be decided meanwhile: whoever runs the batch
        must then call :meth:`sync` and tell nobody any outcome before it returns (this
        process's readers wait for it too). ``blocking`` as for :meth:`write`."""
        if self._batch.__dict__.get("conn") is not None:
            raise RuntimeError("batches do not nest")
        # The instance's write: a server may wrap it in its own lock.
        with self.write() if sync and blocking else self.write(sync=sync, blocking=blocking) as tx:
            self._batch.conn = tx.conn
            try:
                yield tx
            finally:
                self._batch.conn = None

    def sync(self) -> None:
        """Make every commit of ``batch(sync=False)`` so far durable (:meth:`DeferredCommits.sync`)."""
        if self._deferred is not None:
            self._deferred.sync()

    @contextmanager
    def _savepoint(self, conn: Connection) -> Iterator[None]:
        # Named by nesting depth, not numbered: the same few statements every time, so the
        # driver's statement cache prepares each once. A name used again inside itself is fine:
        # SQLite and PostgreSQL both refer to the innermost savepoint of that name.
        local = self._batch
        depth = local.__dict__.get("depth", 0) + 1
        local.depth = depth
        begin, rollback, release = _SAVEPOINTS[depth] if depth < len(_SAVEPOINTS) else _savepoint_sql(depth)
        try:
            if self.dialect == "postgresql":
                with self._pg_savepoint(conn, begin, rollback, release):
                    yield
                return
            run = conn.connection.dbapi_connection.execute  # type: ignore[union-attr]
            run(begin)
            try:
                yield
            except BaseException:
                if self._counts is not None:  # what it learnt inside is undone
                    self._counts.reset()
                run(rollback)
                run(release)
                raise
            run(release)
        finally:
            local.depth = depth - 1

    @contextmanager
    def _pg_savepoint(self, conn: Connection, begin: str, rollback: str, release: str) -> Iterator[None]:
        """A savepoint on PostgreSQL, its SAVEPOINT and RELEASE queued with the operation's own
        statements (see :class:`postgres.Pipeline`); the writes the operation queued are sent
        before it ends, so that their errors are its own."""
        pipe = postgres.Pipeline.of(conn)
        pipe.queue(begin, None, write=False)
        try:
            yield
            if pipe.writes:
                pipe.send()
        except BaseException:
            pipe.known = None  # what the operation learnt is undone with it
            try:
                pipe.send()  # the SAVEPOINT at least, so that there is something to roll back to
            except Exception:  # noqa: BLE001 - the operation's own error is the one raised
                pass
            conn.exec_driver_sql(rollback)
            conn.exec_driver_sql(release)
            raise
        pipe.queue(release, None, write=False)

    def watch_approvals(self, on_change: Callable[[str], None]) -> postgres.ApprovalListener | None:
        """On PostgreSQL, a listener calling ``on_change(approval_id)`` after each committed change
        of an approval's status, made by any process (stop it with ``.stop()``); None on SQLite,
        where the processes sharing a file are on one machine and poll it."""
        if self.dialect != "postgresql":
            return None
        return postgres.ApprovalListener(self.engine.url, on_change)

    def note_commit(self) -> None:
        """Tell the WAL checkpointer about a commit made outside :meth:`write` (on SQLite)."""
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.close()
        if self._kept is not None:
            self._kept.drop()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        self._writers.close()
