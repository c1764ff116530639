"""Where memory snapshots are kept: a file beside a SQLite store, a table in PostgreSQL.

One snapshot at a time, replaced whole: on a file by writing a new one and renaming it over
the old (after an fsync, so a crash leaves the old or the new, never half of one); in
PostgreSQL by replacing the table's rows in one transaction, in chunks (a ``bytea`` holds at
most 1 GB). An in-memory SQLite store keeps none.
"""

from __future__ import annotations

import mmap
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import make_url

from clearance.store import schema as t
from clearance.store.sqlite import file_path
from clearance.store.sqlstore import SqlStore

__all__ = ["SnapshotPlace"]

_CHUNK = 64 * 1024 * 1024


class SnapshotPlace:
    """The one memory snapshot of a store: :meth:`save` replaces it, :meth:`load` reads it."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.path: Path | None = None
        if store.dialect == "sqlite":
            db = file_path(make_url(store.url))
            self.path = Path(db + ".memory.npz") if db else None
        self.kept = self.path is not None or store.dialect != "sqlite"

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else ("the store's memory_snapshots table" if self.kept else "nowhere")

    def save(self, data: bytes, *, seq: int, now: datetime) -> None:
        if self.path is not None:
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")  # workers may save at once
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            return
        if not self.kept:
            return
        with self.store.engine.begin() as conn:  # not the writer lock: decisions go on meanwhile
            conn.execute(delete(t.memory_snapshots))
            for part, start in enumerate(range(0, max(len(data), 1), _CHUNK)):
                conn.execute(insert(t.memory_snapshots).values(part=part, seq=seq, saved_at=now, data=data[start : start + _CHUNK]))

    def load(self) -> bytes | mmap.mmap | None:
        """The snapshot's bytes; a file's as a read-only memory map (read in place, not copied:
        a saved snapshot replaces the file rather than writing into it, so the map stays whole)."""
        if self.path is not None:
            try:
                with open(self.path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            except FileNotFoundError:
                return None
        if not self.kept:
            return None
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(t.memory_snapshots.c.data).order_by(t.memory_snapshots.c.part)).fetchall()
        return b"".join(bytes(r[0]) for r in rows) if rows else None
