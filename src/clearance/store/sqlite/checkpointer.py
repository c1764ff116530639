"""The thread that copies a SQLite file's WAL back into the database, so decisions do not."""

from __future__ import annotations

import sqlite3
import threading

from clearance.store.sqlite import WAL_AUTOCHECKPOINT_PAGES


class Checkpointer:
    """Copies the WAL back into the database file from a thread of its own, so that decisions
    do not pay for it: left to SQLite, the commit that takes the WAL past
    :data:`WAL_AUTOCHECKPOINT_PAGES` copies all of it and fsyncs the file before returning.

    The thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` (no lock anyone waits for) every
    :attr:`every` commits and after :attr:`idle` seconds of quiet. SQLite's own checkpoint stays
    on to start the WAL again, with only the last few commits left to copy. Durability is
    unchanged: a commit is durable once its WAL frames are fsynced, and a checkpoint fsyncs the
    database file before the WAL is reused. When checkpoints cannot finish (old snapshots,
    writers in other processes), past :attr:`valve_frames` frames the thread runs ``RESTART``,
    waiting at most :attr:`valve_timeout_ms` for readers and writers.
    """

    every = 48  # commits between passive checkpoints (a decision appends about 12 pages)
    idle = 0.2  # seconds without a commit before the rest is copied back
    valve_frames = 2 * WAL_AUTOCHECKPOINT_PAGES  # WAL frames (32 MB) the autocheckpoint failed to reset
    valve_timeout_ms = 50

    def __init__(self, path: str) -> None:
        self.path = path
        self._pending = 0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.runs = self.valves = 0  # diagnostics

    def committed(self) -> None:
        """A commit of this store (or on its file): checkpoint after :attr:`every` of them."""
        self._pending += 1  # a lost increment under a race only delays a checkpoint
        if self._thread is None:
            self._start()
        if self._pending >= self.every:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="clearance-wal-checkpoint", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
            conn.execute("PRAGMA synchronous=FULL")
            while not self._stopping:
                woken = self._wake.wait(self.idle)
                self._wake.clear()
                if self._stopping or (not woken and self._pending == 0):
                    continue
                self._pending = 0
                self.checkpoint(conn)
            if self._pending:
                self.checkpoint(conn)
        except Exception:  # noqa: BLE001 - never take the process down; SQLite's autocheckpoint remains
            import logging

            logging.getLogger("clearance.store").warning("the WAL checkpointer stopped", exc_info=True)
        finally:
            if conn is not None:
                conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """A passive checkpoint, and the valve when the WAL is very long. Returns SQLite's
        ``(busy, WAL frames, frames copied)``."""
        try:
            result = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.OperationalError:  # e.g. another connection is checkpointing: it does the work
            return 1, -1, -1
        self.runs += 1
        if result[1] > self.valve_frames and result[2] < result[1]:
            conn.execute(f"PRAGMA busy_timeout={self.valve_timeout_ms}")
            try:
                result = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                self.valves += 1
            except sqlite3.OperationalError:
                pass
            finally:
                conn.execute("PRAGMA busy_timeout=0")
        return result
