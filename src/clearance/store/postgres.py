"""PostgreSQL's side of the store (and of any server database): its pool, its writer lock and
its snapshot reads."""

from __future__ import annotations

from sqlalchemy import Connection, create_engine, select
from sqlalchemy.engine import URL
from sqlalchemy.engine import Engine as SAEngine

from clearance.store import schema as t
from clearance.store.statements import json_dumps

_LOCK_HEAD = select(t.chain_head.c.id).where(t.chain_head.c.id == 1).with_for_update()


def engine(url: URL, *, echo: bool) -> SAEngine:
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=8, max_overflow=16, json_serializer=json_dumps)


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
