"""The rows a prune archives and deletes, and the cut it leaves (see ``clearance.engine.retention``).

A prune cuts the audit chain after event ``cut``: every event up to it, and the decisions whose
``decision.made`` event is among them (with their outcomes, executions, usage rows and answered
approvals), leave the store. A decision still waiting for a person stays (its approval needs
it). All within the caller's write transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from clearance.store import schema as t
from clearance.store.transaction import SqlTx

__all__ = ["cut_point", "delete_through", "pruned_rows", "record_cut"]

_IN = 500  # ids per IN (...) list


def cut_point(tx: SqlTx, before: datetime) -> int:
    """The last seq such that it and every event before it were written before ``before``."""
    e = t.events.c
    first_kept = tx.conn.execute(select(func.min(e.seq)).where(e.created_at >= before)).scalar()
    head, _ = tx.chain_head()
    return head if first_kept is None else int(first_kept) - 1


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _IN):
        yield list(ids[i : i + _IN])


def pruned_rows(tx: SqlTx, cut: int, after: int = 0) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    """The request ids whose decisions leave with events ``after+1..cut``, and every row that
    leaves, as ``(table, row)``, events with their whole bodies, in seq order."""
    e = t.events.c
    made = [r[0] for r in tx.conn.execute(select(e.request_id).where(e.seq > after, e.seq <= cut, e.type == "decision.made"))]
    pending: set[str] = set()
    for chunk in _chunks(made):
        a = t.approvals.c
        pending.update(r[0] for r in tx.conn.execute(select(a.request_id).where(a.request_id.in_(chunk), a.status == "pending")))
    leaving = [rid for rid in made if rid not in pending]

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        last = after
        while True:
            batch = tx.query_events(after_seq=last, limit=1000)
            batch = [r for r in batch if r["seq"] <= cut]
            if not batch:
                break
            for r in batch:
                yield "events", r
            last = batch[-1]["seq"]
        for chunk in _chunks(leaving):
            for table, column in _BY_REQUEST:
                for r in tx.conn.execute(select(table).where(column.in_(chunk))).mappings():
                    yield table.name, dict(r)
            approval_ids = [r[0] for r in tx.conn.execute(select(t.approvals.c.approval_id).where(t.approvals.c.request_id.in_(chunk)))]
            if approval_ids:
                for r in tx.conn.execute(select(t.approval_votes).where(t.approval_votes.c.approval_id.in_(approval_ids))).mappings():
                    yield "approval_votes", dict(r)

    return leaving, rows()


_BY_REQUEST = ((t.decisions, t.decisions.c.request_id), (t.outcomes, t.outcomes.c.request_id),
               (t.executions, t.executions.c.request_id), (t.approvals, t.approvals.c.request_id),
               (t.usage, t.usage.c.request_id))  # fmt: skip


def delete_through(tx: SqlTx, cut: int, leaving: Sequence[str]) -> dict[str, int]:
    """Delete events up to ``cut`` and the rows of the ``leaving`` decisions; counts per table."""
    counts: dict[str, int] = {}
    for chunk in _chunks(list(leaving)):
        approval_ids = [r[0] for r in tx.conn.execute(select(t.approvals.c.approval_id).where(t.approvals.c.request_id.in_(chunk)))]
        if approval_ids:
            n = tx.conn.execute(delete(t.approval_votes).where(t.approval_votes.c.approval_id.in_(approval_ids))).rowcount
            counts["approval_votes"] = counts.get("approval_votes", 0) + n
        for table, column in _BY_REQUEST:
            n = tx.conn.execute(delete(table).where(column.in_(chunk))).rowcount
            counts[table.name] = counts.get(table.name, 0) + n
    counts["events"] = tx.conn.execute(delete(t.events).where(t.events.c.seq <= cut)).rowcount
    if tx._counts is not None:
        tx._counts.reset()  # SQLite's in-memory rate-limit counts: usage rows left
    return counts


def record_cut(tx: SqlTx, row: dict[str, Any]) -> None:
    tx.conn.execute(insert(t.chain_cuts).values(**row))
