"""PostgreSQL's side of the store (and of any server database): its pool, its writer lock, its
snapshot reads, and the announcement of approval changes to every replica (NOTIFY/LISTEN)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from sqlalchemy import Connection, create_engine, select, text
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
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=max(size, 1), max_overflow=overflow,
                         json_serializer=json_dumps)  # fmt: skip


def lock_writers(conn: Connection) -> None:
    """The store's writer lock: the audit chain's head row, which every write transaction
    appends to anyway, locked until the transaction ends."""
    conn.execute(_LOCK_HEAD)


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
