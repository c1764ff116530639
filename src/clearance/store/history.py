"""Recorded decisions and their outcomes, read in time order for replays (backtests, rule
evidence). Read-only: a replay never writes to the store it reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from clearance.store import schema as t
from clearance.store.transaction import SqlTx

__all__ = ["count_decisions", "iter_decisions", "iter_outcomes", "outcome_events"]

_d = t.decisions.c
_o = t.outcomes.c
_COLUMNS = (_d.request_id, _d.tool, _d.actor, _d.domain, _d.target, _d.value, _d.arguments, _d.context, _d.result,
            _d.decided_at, _d.decision)  # fmt: skip


def _window(since: datetime | None, until: datetime | None) -> list[Any]:
    where = []
    if since is not None:
        where.append(_d.decided_at >= since)
    if until is not None:
        where.append(_d.decided_at < until)
    return where


def count_decisions(tx: SqlTx, since: datetime | None = None, until: datetime | None = None) -> int:
    """How many decisions were made in ``[since, until)``."""
    return int(tx.conn.execute(select(func.count()).select_from(t.decisions).where(*_window(since, until))).scalar_one())


def iter_decisions(tx: SqlTx, since: datetime | None = None, until: datetime | None = None,
                   batch: int = 2000) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The decisions of ``[since, until)``, oldest first (ties in request id order), streamed."""
    q = select(*_COLUMNS).where(*_window(since, until)).order_by(_d.decided_at, _d.request_id)
    result = tx.conn.execution_options(yield_per=batch).execute(q)
    for row in result.mappings():
        yield dict(row)


def iter_outcomes(tx: SqlTx, since: datetime | None = None, until: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The outcomes reported of the decisions made in ``[since, until)``: request id, status, cost."""
    q = (select(_o.request_id, _o.status, _o.severity, _o.cost, _o.observed_at)
         .join(t.decisions, _d.request_id == _o.request_id).where(*_window(since, until)))  # fmt: skip
    for row in tx.conn.execute(q).mappings():
        yield dict(row)


def outcome_events(tx: SqlTx, after_seq: int, before_seq: int | None = None) -> Iterator[tuple[int, str, str, str, str]]:
    """``(seq, status, tool, actor, domain)`` of each ``outcome.reported`` event after ``after_seq``
    (and before ``before_seq``), in the order they were recorded. A bounded range is read by the
    chain's own key (the type is checked here), so a short range costs a short read however long
    the log; an open one (a whole log) by the type's index."""
    e = t.events.c
    q = (select(e.seq, e.type, e.body, _d.tool, _d.actor, _d.domain).join(t.decisions, _d.request_id == e.request_id)
         .where(e.seq > after_seq).order_by(e.seq))  # fmt: skip
    q = q.where(e.type == "outcome.reported") if before_seq is None else q.where(e.seq < before_seq)
    for seq, type_, body, tool, actor, domain in tx.conn.execute(q):
        if type_ == "outcome.reported":
            yield seq, json.loads(body)["payload"]["status"], tool, actor, domain
