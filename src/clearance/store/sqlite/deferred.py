"""Group commit's deferred durability on a SQLite file: commits that do not wait for the disk,
and the one fsync of the WAL that makes them durable together."""

from __future__ import annotations

import os
import threading

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine


class DeferredCommits:
    """The commits of ``batch(sync=False)``, made on one connection kept for them with
    ``synchronous=NORMAL`` (in WAL mode a commit is then only written to the WAL), and how many
    of them :meth:`sync` has made durable. Used only by the holder of the writer queue."""

    def __init__(self, engine: SAEngine, path: str) -> None:
        self.engine = engine
        self.wal = f"{path}-wal"
        self.wal_mode: bool | None = None  # whether the file is in WAL mode (asked once)
        self.unsynced = self.synced = 0  # deferred commits made, and how many are known durable
        self.kept: Connection | None = None
        self._kept_pid = 0
        self._lock = threading.Lock()

    def connection(self) -> Connection | None:
        """The connection whose commits do not wait for the disk, kept across batches since
        setting one up for each is costly. None when the file is not in WAL mode."""
        if self.wal_mode is False:
            return None
        conn = self.kept
        if conn is not None:
            if self._kept_pid != os.getpid():  # a forked child: never the parent's connection
                self.kept = None
            elif not conn.invalidated and not conn.closed:
                return conn
            else:
                self._drop_kept()
        conn = self.engine.connect()
        try:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            if self.wal_mode is None:  # once: is the WAL what holds commits?
                self.wal_mode = str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
            if not self.wal_mode:
                conn.close()
                return None
            raw.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        self.kept, self._kept_pid = conn, os.getpid()
        return conn

    def _drop_kept(self) -> None:
        """Give the kept connection back to the pool set to wait for the disk (or discard it)."""
        conn, self.kept = self.kept, None
        if conn is None or self._kept_pid != os.getpid():
            return
        try:
            if not conn.invalidated and not conn.closed:
                conn.connection.dbapi_connection.execute("PRAGMA synchronous=FULL")  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a broken connection is not put back
            conn.invalidate()
        conn.close()

    def sync(self) -> None:
        """Make every deferred commit before this call durable: one fsync of the WAL, which holds
        them in order (what a checkpoint copied out of it SQLite fsynced before reusing it).
        Concurrent callers share a fsync; ``OSError`` when it fails: nothing since the last
        success is then known to be durable."""
        with self._lock:
            target = self.unsynced
            if self.synced >= target:
                return  # another caller's fsync, begun after those commits, covered them
            fd = os.open(self.wal, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.synced = target

    def close(self) -> None:
        self.sync()  # a no-op when every deferred commit is durable already
        self._drop_kept()
