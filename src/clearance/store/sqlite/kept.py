"""A connection kept out of the pool for the holder of a SQLite store's writer queue."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine


class KeptConnection:
    """One connection, kept across write transactions and used only by whoever holds the
    store's writer queue (so by one thread at a time): checking a connection out of the pool
    and back in for every decision costs more than SQLite's own ``BEGIN`` and ``COMMIT``.

    ``setup`` and ``teardown`` run on the driver connection when it is taken out of the pool
    and before it goes back. A forked child never uses its parent's connection; a broken one
    is discarded and replaced on the next call."""

    def __init__(self, engine: SAEngine, setup: Callable[[Any], None] | None = None,
                 teardown: Callable[[Any], None] | None = None) -> None:  # fmt: skip
        self.engine = engine
        self._setup, self._teardown = setup, teardown
        self._conn: Connection | None = None
        self._pid = 0

    def connection(self) -> Connection:
        conn = self._conn
        if conn is not None:
            if self._pid != os.getpid():  # a forked child: never the parent's connection
                self._conn = None
            elif not conn.invalidated and not conn.closed:
                return conn
            else:
                self.drop()
        conn = self.engine.connect()
        if self._setup is not None:
            try:
                self._setup(conn.connection.dbapi_connection)
            except BaseException:
                conn.invalidate()
                conn.close()
                raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    @property
    def current(self) -> Connection | None:
        """The connection kept now, if any."""
        return self._conn

    def drop(self) -> None:
        """Give the connection back to the pool (or discard it when it is broken)."""
        conn, self._conn = self._conn, None
        if conn is None or self._pid != os.getpid():
            return
        try:
            if self._teardown is not None and not conn.invalidated and not conn.closed:
                self._teardown(conn.connection.dbapi_connection)
        except Exception:  # noqa: BLE001 - a broken connection is not put back
            conn.invalidate()
        conn.close()
