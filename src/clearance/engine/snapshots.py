"""Memory snapshots for an engine: saved beside the store, loaded and checked at start.

A restart used to rebuild memory from the whole audit log (17 s at 100,000 decisions). With a
snapshot it loads memory's state as data (:mod:`clearance.memory.snapshot`), checks that the
store's chain still holds the event the snapshot reflects (same seq, same hash; or the chain's
cut at exactly that event, after ``clearance store prune``), and reads only the events after it;
the drift streams saved with it (:meth:`DriftWatch.copy`) are adopted the same way, so warming
them reads only the outcomes after their position instead of every outcome in the log.
A snapshot that does not match (unreadable, other settings or version, another history) is
ignored with a warning, and memory is rebuilt from the log as before: a snapshot can make a
start faster, never make memory wrong.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clearance.store.snapshots import SnapshotPlace

if TYPE_CHECKING:
    from clearance.engine.core import Engine
    from clearance.memory.drift import DriftMonitor

__all__ = ["SnapshotInfo", "Snapshots"]

log = logging.getLogger("clearance.memory")


@dataclass(frozen=True)
class SnapshotInfo:
    """What a save or a load did: ``status`` is ``saved``, ``loaded``, ``none``, ``ignored`` or ``off``."""

    status: str
    seq: int = 0
    bytes: int = 0
    seconds: float = 0.0
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "seq": self.seq, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "reason": self.reason}  # fmt: skip


def _snapshot_module() -> Any:
    from clearance.memory import snapshot

    return snapshot


class Snapshots:
    """The engine's memory snapshot: only a :class:`~clearance.memory.cases.CaseMemory` has one."""

    def __init__(self, engine: Engine) -> None:
        from clearance.memory.cases import CaseMemory

        self.engine = engine
        self.place = SnapshotPlace(engine.store)
        self.enabled = isinstance(engine.memory, CaseMemory) and self.place.kept
        self.saved_seq = -1  # the cursor of the last snapshot saved or loaded by this engine

    def save(self, *, if_changed: bool = False, drift: DriftMonitor | None = None) -> SnapshotInfo:
        """Save memory as it is now (caught up with the log first, so it reflects a chain
        position), with the engine's drift streams when given (``drift.cursor`` at most memory's)."""
        if not self.enabled:
            return SnapshotInfo("off")
        memory = self.engine.memory
        if if_changed and memory.cursor == self.saved_seq:
            return SnapshotInfo("unchanged", seq=memory.cursor)
        started = time.perf_counter()
        snap = _snapshot_module()
        data = snap.dump(memory, drift)  # type: ignore[arg-type]
        seq = int(snap.read_meta(data)["cursor"])
        self.place.save(data, seq=seq, now=self.engine.clock())
        self.saved_seq = seq
        info = SnapshotInfo("saved", seq=seq, bytes=len(data), seconds=time.perf_counter() - started)
        log.info("memory snapshot saved at event %d (%d bytes, %.2f s) to %s", seq, len(data), info.seconds, self.place)
        return info

    def load(self) -> SnapshotInfo:
        """Load the snapshot into the engine's (empty) memory if it matches the store; else
        leave memory empty (to be rebuilt) and say why, with a warning."""
        if not self.enabled:
            return SnapshotInfo("off")
        started = time.perf_counter()
        data = self.place.load()
        if data is None:
            return SnapshotInfo("none")
        snap = _snapshot_module()
        memory = self.engine.memory
        try:
            meta = snap.read_meta(data)
            problem = self._check_chain(int(meta["cursor"]), meta.get("cursor_hash"))
            if problem is None:
                drift = snap.load(data, memory, self.engine.drift.settings)
                if drift is not None:
                    self.engine.drift.adopt(drift)
        except snap.SnapshotError as exc:
            problem = str(exc)
        if problem is not None:
            memory.reset()
            log.warning("memory snapshot %s ignored (%s): memory is rebuilt from the audit log", self.place, problem)
            return SnapshotInfo("ignored", bytes=len(data), seconds=time.perf_counter() - started, reason=problem)
        self.saved_seq = memory.cursor
        return SnapshotInfo("loaded", seq=memory.cursor, bytes=len(data), seconds=time.perf_counter() - started)

    def _check_chain(self, seq: int, digest: str | None) -> str | None:
        """None when the store's chain holds event ``seq`` with hash ``digest``; else why not."""
        if seq == 0:
            return None
        with self.engine.store.read() as tx:
            head, _ = tx.chain_head()
            if seq > head:
                return f"it reflects event {seq} but the chain ends at {head}"
            rows = tx.query_events(after_seq=seq - 1, limit=1)
            if rows and rows[0]["seq"] == seq:
                return None if rows[0]["hash"] == digest else f"event {seq} of the chain differs from the snapshot's"
            cut = tx.chain_cut()
        if cut is not None and cut[0] == seq:
            return None if cut[1] == digest else f"the chain's cut at event {seq} differs from the snapshot's"
        return f"event {seq} is no longer in the store"
