"""Durable state behind one interface: SQLite by default, PostgreSQL for shared deployments."""

from __future__ import annotations

import os
from pathlib import Path

from clearance.store.sqlite import WAL_AUTOCHECKPOINT_PAGES
from clearance.store.writers import WouldBlock
from clearance.store.sqlstore import SqlStore
from clearance.store.statements import GENESIS
from clearance.store.transaction import SqlTx

__all__ = ["DEFAULT_DB", "GENESIS", "WAL_AUTOCHECKPOINT_PAGES", "SqlStore", "SqlTx", "WouldBlock", "open_store", "resolve_location"]

DEFAULT_DB = "clearance.db"


def resolve_location(location: str | Path | None = None) -> str:
    """A database URL from an explicit location, else ``CLEARANCE_DB``, else ``./clearance.db``.

    A location with ``://`` is taken as a SQLAlchemy URL (``postgresql+psycopg://...``);
    anything else is a path to a SQLite file. A URL is never taken for a path (a ``Path`` would
    turn ``postgresql://x`` into a file ``postgresql:/x``): pass URLs as strings. A plain
    ``postgresql://`` or ``postgres://`` URL means psycopg 3, the driver of the postgres extra
    (SQLAlchemy's own default for it is psycopg2, which clearance does not use).
    """
    loc = str(location) if location is not None else os.environ.get("CLEARANCE_DB") or DEFAULT_DB
    if "://" in loc:
        scheme, rest = loc.split("://", 1)
        return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else loc
    return f"sqlite:///{Path(loc).expanduser()}"


def open_store(location: str | Path | None = None, **kw: object) -> SqlStore:
    return SqlStore(resolve_location(location), **kw)  # type: ignore[arg-type]
