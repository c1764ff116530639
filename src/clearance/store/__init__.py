"""Durable state behind one interface: SQLite by default, PostgreSQL for shared deployments."""

from __future__ import annotations

import os
from pathlib import Path

from clearance.store.sql import SqlStore, SqlTx

__all__ = ["DEFAULT_DB", "SqlStore", "SqlTx", "open_store", "resolve_location"]

DEFAULT_DB = "clearance.db"


def resolve_location(location: str | Path | None = None) -> str:
    """A database URL from an explicit location, else ``CLEARANCE_DB``, else ``./clearance.db``.

    A location with ``://`` is taken as a SQLAlchemy URL (``postgresql+psycopg://...``);
    anything else is a path to a SQLite file.
    """
    loc = str(location) if location is not None else os.environ.get("CLEARANCE_DB") or DEFAULT_DB
    if "://" in loc:
        return loc
    return f"sqlite:///{Path(loc).expanduser()}"


def open_store(location: str | Path | None = None, **kw: object) -> SqlStore:
    return SqlStore(resolve_location(location), **kw)  # type: ignore[arg-type]
