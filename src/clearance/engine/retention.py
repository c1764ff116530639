"""Retention: old decisions, events and outcomes archived to a compressed file and deleted.

``Engine.prune(before)`` cuts the audit chain after the last event written before ``before``:
those events, and the decisions they made (with outcomes, executions, usage rows and answered
approvals; a decision still waiting for a person stays), are written to a gzip JSON-lines
archive, fsynced, and then deleted in the same write transaction. What stays behind is the
*cut*: the last archived event's seq and hash (``chain_cuts``), from which ``audit verify``
proves every event kept, and a ``store.pruned`` audit event that records the cut and the
archive's SHA-256. Memory keeps what it learnt: it is caught up before the cut and its snapshot
saved after it (a memory rebuilt without a snapshot knows only the events kept).

:func:`cut_record` is the cut as canonical text, the thing to sign or anchor elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearance.engine import audit
from clearance.model import canonical_json
from clearance.store import retention as rows

if TYPE_CHECKING:
    from clearance.engine.core import Engine

__all__ = ["MIN_AGE", "PruneReport", "cut_record", "prune"]

#: A prune keeps at least the last day: rate limits count calls of the past 24 hours.
MIN_AGE = timedelta(days=1)


def cut_record(seq: int, hash: str, before: datetime, archive_sha256: str | None) -> str:
    """The cut as the canonical JSON that is hashed into ``chain_cuts.digest`` and the
    ``store.pruned`` event: small and stable, for a signature or an outside anchor."""
    return canonical_json({"kind": "clearance.chain_cut", "seq": seq, "hash": hash, "before": before.isoformat(),
                           "archive_sha256": archive_sha256})  # fmt: skip


@dataclass(frozen=True)
class PruneReport:
    cut_seq: int
    cut_hash: str | None
    archive: str | None
    archive_sha256: str | None
    deleted: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"cut_seq": self.cut_seq, "cut_hash": self.cut_hash, "archive": self.archive,
                "archive_sha256": self.archive_sha256, "deleted": self.deleted}  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def default_archive(engine: Engine, cut: int) -> Path:
    place = engine.snapshots.place.path
    if place is None:
        raise ValueError("this store is not a SQLite file: say where the archive goes (--archive PATH)")
    db = place.with_name(place.name[: -len(".memory.npz")])
    return db.with_name(f"{db.name}.archive-{cut}.jsonl.gz")


def prune(engine: Engine, before: datetime, *, archive: str | Path | None = None) -> PruneReport:
    """Archive and delete what was written before ``before`` (see the module doc)."""
    if before.tzinfo is None:
        before = before.replace(tzinfo=timezone.utc)
    now = engine.clock()
    if before > now - MIN_AGE:
        raise ValueError(f"prune keeps at least the last day (rate limits count it): --before must be "
                         f"{(now - MIN_AGE).date().isoformat()} or earlier")  # fmt: skip
    if engine.memory.learns:
        engine.warm_memory()  # memory learns everything before the cut is archived
    written: list[Path] = []
    try:
        report = _prune(engine, before, now, archive, written)
    except BaseException:
        for path in written:  # the deletions did not happen: the archive must not say they did
            path.unlink(missing_ok=True)
        raise
    if engine.memory.learns and report.archive is not None:
        engine.save_memory_snapshot()  # what memory learnt before the cut survives a restart
    return report


def _prune(engine: Engine, before: datetime, now: datetime, archive: str | Path | None, written: list[Path]) -> PruneReport:
    with engine.store.write() as tx:
        done = tx.chain_cut()
        after = done[0] if done else 0
        cut = rows.cut_point(tx, before)
        if cut <= after:
            return PruneReport(after, done[1] if done else None, None, None)
        cut_event = tx.query_events(after_seq=cut - 1, limit=1)[0]
        leaving, leaving_rows = rows.pruned_rows(tx, cut, after)
        path = Path(archive) if archive is not None else default_archive(engine, cut)
        if path.exists():
            raise ValueError(f"{path} exists already: archives are never overwritten")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        digest = hashlib.sha256()
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                head = {"archive": "clearance", "cut_seq": cut, "cut_hash": cut_event["hash"], "from_seq": after + 1,
                        "before": before.isoformat()}  # fmt: skip
                for item in [head]:
                    gz.write((json.dumps(item, separators=(",", ":")) + "\n").encode())
                for table, row in leaving_rows:
                    gz.write((json.dumps({"table": table, "row": row}, separators=(",", ":"), default=_plain) + "\n").encode())
            raw.flush()
            os.fsync(raw.fileno())
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        os.replace(tmp, path)
        written.append(path)
        sha = digest.hexdigest()
        deleted = rows.delete_through(tx, cut, leaving)
        record = cut_record(cut, cut_event["hash"], before, sha)
        rows.record_cut(tx, {"seq": cut, "hash": cut_event["hash"], "cut_at": now, "before": before, "archive": str(path),
                             "digest": hashlib.sha256(record.encode()).hexdigest()})  # fmt: skip
        audit.append(tx, "store.pruned", {"cut": json.loads(record), "archive": str(path), "deleted": deleted}, now=now)
    return PruneReport(cut, cut_event["hash"], str(path), sha, deleted)
