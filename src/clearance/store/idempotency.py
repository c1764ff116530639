"""Idempotency keys kept outside the engine's transactions: a request's key is reserved before it
runs and its answer stored after (see :class:`IdempotencyKeys`); the server's ``Idempotency-Key``
handling is built on these, through ``engine.idempotency``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from clearance.model import utcnow
from clearance.store.schema import idempotency_keys as T
from clearance.store.sqlite import WAL_AUTOCHECKPOINT_PAGES
from clearance.store.sqlstore import SqlStore
from clearance.store.writers import WouldBlock

__all__ = ["KEEP", "IdempotencyKeys", "KeptAnswer"]

#: How long a key's answer is kept.
KEEP = timedelta(hours=24)
#: What is kept under a key: the request's fingerprint, ``pending`` or ``done``, status, body.
KeptAnswer = tuple[str, str, "int | None", "str | None"]


class IdempotencyKeys:
    """The ``idempotency_keys`` rows of requests other than decisions (a decision keeps its key's
    answer in its own transaction: ``SqlTx.keep_idempotent_answer``), written on their own
    connections without waiting for a flush to disk: on SQLite with ``synchronous=NORMAL``, on
    PostgreSQL with ``synchronous_commit off``. That is safe here because the operation that
    follows a reservation commits with a full flush of the same log, which makes the reservation
    durable first; a stored answer lost in a power cut leaves its key reserved, so a retry gets
    409 rather than a second operation. Writes queue with the store's other writers."""

    def __init__(self, store: SqlStore, *, seal: Callable[[str], str] | None = None,
                 unseal: Callable[[str], str] | None = None) -> None:  # fmt: skip
        """``seal`` and ``unseal`` keep an answer that holds a secret (a resumed run's state)
        sealed at rest and give it back whole on a retry."""
        self.store = store
        self._seal, self._unseal = seal or _same, unseal or _same
        self._since_prune = 0
        self.engine = store.engine
        self._sqlite_path: str | None = None
        self.inline = store.dialect == "sqlite"
        if store.dialect == "sqlite":
            # Plain sqlite3 connections, one per thread, one statement per step: this runs twice
            # for every decision that carries a key, so it is kept to the bare minimum.
            self._sqlite_path = store.engine.url.database
            self._local = threading.local()
            self._opened: list[sqlite3.Connection] = []

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.store.writers.held(), self.engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            assert self._sqlite_path is not None
            conn = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            # Checkpoints are the store's business (its checkpointer thread): with SQLite's
            # default of 1000 pages these commits, made on the event loop, would run them.
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._local.conn = conn
            self._opened.append(conn)
        return conn

    def begin(self, key_id: str, idem_key: str, fingerprint: str) -> tuple[str, int | None, str | None]:
        """``("new", None, None)`` once reserved; ``("done", status, body)``; ``("pending", ...)``; ``("mismatch", ...)``."""
        state, status, body = self._begin(key_id, idem_key, fingerprint)
        return state, status, self._unseal(body) if body is not None else None

    def _begin(self, key_id: str, idem_key: str, fingerprint: str) -> tuple[str, int | None, str | None]:
        if self._sqlite_path is not None:
            return self._begin_sqlite(key_id, idem_key, fingerprint)
        now = utcnow()
        c = T.c
        try:
            with self._write() as conn:
                self._since_prune += 1
                if self._since_prune >= 1000:
                    self._since_prune = 0
                    conn.execute(delete(T).where(c.created_at < now - KEEP))
                row = conn.execute(select(T).where(c.key_id == key_id, c.idem_key == idem_key)).mappings().first()
                if row is None:
                    conn.execute(insert(T), {"key_id": key_id, "idem_key": idem_key, "fingerprint": fingerprint,
                                             "state": "pending", "status_code": None, "body": None, "created_at": now})  # fmt: skip
                    return "new", None, None
        except IntegrityError:  # another process reserved it between our read and insert
            return "pending", None, None
        if row["fingerprint"] != fingerprint:
            return "mismatch", None, None
        if row["state"] != "done":
            return "pending", None, None
        return "done", row["status_code"], row["body"]

    def _begin_sqlite(self, key_id: str, idem_key: str, fingerprint: str) -> tuple[str, int | None, str | None]:
        conn = self._sqlite()
        now = utcnow()
        with self.store.writers.held():
            self._since_prune += 1
            if self._since_prune >= 1000:
                self._since_prune = 0
                conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (_sqlite_time(now - KEEP),))
            inserted = conn.execute(
                "INSERT INTO idempotency_keys (key_id, idem_key, fingerprint, state, created_at) "
                "VALUES (?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
                (key_id, idem_key, fingerprint, _sqlite_time(now)),
            ).rowcount
        self.store.note_commit()
        if inserted == 1:
            return "new", None, None
        row = conn.execute("SELECT fingerprint, state, status_code, body FROM idempotency_keys WHERE key_id = ? AND idem_key = ?",
                           (key_id, idem_key)).fetchone()  # fmt: skip
        if row is None or row[0] != fingerprint:
            return ("pending" if row is None else "mismatch"), None, None
        if row[1] != "done":
            return "pending", None, None
        return "done", row[2], row[3]

    def finish(self, key_id: str, idem_key: str, status: int, body: str) -> None:
        body = self._seal(body)
        if self._sqlite_path is not None:
            with self.store.writers.held():
                self._sqlite().execute("UPDATE idempotency_keys SET state = 'done', status_code = ?, body = ? "
                                       "WHERE key_id = ? AND idem_key = ?", (status, body, key_id, idem_key))  # fmt: skip
            return
        with self._write() as conn:
            conn.execute(update(T).where(T.c.key_id == key_id, T.c.idem_key == idem_key)
                         .values(state="done", status_code=status, body=body))  # fmt: skip

    def abandon(self, key_id: str, idem_key: str) -> None:
        if self._sqlite_path is not None:
            with self.store.writers.held():
                self._sqlite().execute("DELETE FROM idempotency_keys WHERE key_id = ? AND idem_key = ?", (key_id, idem_key))
            return
        with self._write() as conn:
            conn.execute(delete(T).where(T.c.key_id == key_id, T.c.idem_key == idem_key))

    def now_or_never(self, fn: Any, *args: Any) -> tuple[bool, Any]:
        """``(True, fn(*args))`` when the writer queue is free at once, else ``(False, None)``
        without waiting (an event loop may run a step inline, but must not wait for a lock)."""
        try:
            if not self.store.writers.enter(blocking=False):
                return True, fn(*args)  # nested in a write of this thread, or no queue to hold
        except WouldBlock:
            return False, None
        try:
            return True, fn(*args)
        finally:
            self.store.writers.exit()

    def close(self) -> None:
        for conn in getattr(self, "_opened", []):
            conn.close()


def _sqlite_time(value: datetime) -> str:
    """How the store's UTCDateTime column is spelled in SQLite (naive UTC, microseconds)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _same(text: str) -> str:
    return text
