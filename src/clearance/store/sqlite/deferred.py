"""Group commit's deferred durability on a SQLite file: commits that do not wait for the disk,
and the one fsync of the WAL that makes them durable together."""

from __future__ import annotations

import os
import threading

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine

from clearance.store.sqlite.kept import KeptConnection


class DeferredCommits:
    """The commits of ``batch(sync=False)``, made on one connection kept for them with
    ``synchronous=NORMAL`` (in WAL mode a commit is then only written to the WAL), and how many
    of them :meth:`sync` has made durable. Used only by the holder of the writer queue."""

    def __init__(self, engine: SAEngine, path: str) -> None:
        self.engine = engine
        self.wal = f"{path}-wal"
        self.wal_mode: bool | None = None  # whether the file is in WAL mode (asked once)
        self.unsynced = self.synced = 0  # deferred commits made, and how many are known durable
        self._kept = KeptConnection(engine, setup=lambda raw: raw.execute("PRAGMA synchronous=NORMAL"),
                                    teardown=lambda raw: raw.execute("PRAGMA synchronous=FULL"))  # fmt: skip
        self._lock = threading.Lock()

    def connection(self) -> Connection | None:
        """The connection whose commits do not wait for the disk, kept across batches since
        setting one up for each is costly. None when the file is not in WAL mode."""
        if self.wal_mode is None:  # once: is the WAL what holds commits?
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                self.wal_mode = str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        return self._kept.connection() if self.wal_mode else None

    @property
    def kept(self) -> Connection | None:
        """The connection kept for deferred commits now, if any."""
        return self._kept.current

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
        self._kept.drop()
