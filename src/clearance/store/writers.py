"""The queue that lines up a store's writers: this process's threads, and on a SQLite file the
processes too, before ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class WouldBlock(Exception):
    """A non-blocking write found the store held by another writer; nothing was done."""


class WriterQueue:
    """Lines up this store's writers: threads on a lock and, on a SQLite file (``path``),
    processes on an ``flock`` of a file beside the database (``<db>-writer``). SQLite's busy
    handler sleeps in growing steps, so a waiting writer can sleep long after the lock was
    freed; here it wakes as soon as the previous writer is done. On PostgreSQL the threads of a
    process wait here rather than each holding a connection while it waits for the row lock.
    The database's own lock still decides, so writers that do not queue here are excluded as
    before. A nested write does not queue.

    Where there is no ``fcntl`` (Windows) only threads queue here; processes are ordered by
    SQLite's own lock, ``BEGIN IMMEDIATE`` waiting in its busy handler up to the busy timeout.
    """

    def __init__(self, path: str | None = None) -> None:
        fcntl = None
        if path is not None:
            try:  # imported here, not at module import, so that the package imports without it
                import fcntl
            except ImportError:
                fcntl = None
        self._fcntl = fcntl
        self.path = f"{path}-writer"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._fd: int | None = None
        self._pid = 0

    def enter(self, blocking: bool = True) -> bool:
        """Queue up; True when this call holds the queue (and must :meth:`exit`). With
        ``blocking=False``, raises :class:`WouldBlock` instead of waiting for another writer."""
        if getattr(self._local, "held", False):
            return False
        if not self._lock.acquire(blocking):
            raise WouldBlock("another writer of this process holds the store")
        if (fcntl := self._fcntl) is not None:
            try:
                fd = self._fd
                if fd is None or self._pid != os.getpid():  # first use, or a forked child: its own descriptor
                    fd = self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                    self._pid = os.getpid()
                fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.release()
                raise WouldBlock("another process is writing to the store") from None
            except OSError:  # e.g. a read-only directory: SQLite's busy handler orders the writers
                self._lock.release()
                return False
        self._local.held = True
        return True

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the queue for a write made on a connection of its own (nested: passes)."""
        queued = self.enter()
        try:
            yield
        finally:
            if queued:
                self.exit()

    def exit(self) -> None:
        self._local.held = False
        try:
            if self._fd is not None:
                self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None
