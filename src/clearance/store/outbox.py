"""The webhook outbox: approval events queued per endpoint, claimed by one worker at a time,
and what their receivers answered (``webhook_cursors`` and ``webhook_deliveries``).

Driven by the audit trail: approvals are created, resolved and expired by any server worker,
by the command line and by embedded engines sharing the store, and the trail is the one
durable, ordered record of all of them. Each sender's outbox (``engine.webhook_outbox(...)``)

1. **queues**: under a lock on the endpoint's cursor row (``BEGIN IMMEDIATE`` on SQLite,
   ``SELECT ... FOR UPDATE`` on PostgreSQL) it reads the approval events after the endpoint's
   cursor, writes one delivery row per event (its id is derived from the endpoint and the
   event's ``seq``, so a second copy cannot exist) and moves the cursor;
2. **claims** due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so no other
   worker sends them while the lease holds, and counts the attempt;
3. **records** each answer: delivered, final failure, or a retry time.

A new endpoint starts at the current end of the audit trail.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from clearance.model import Attempt, Delivery, utcnow
from clearance.store import schema as t
from clearance.store.sqlstore import SqlStore

__all__ = ["WebhookOutbox", "delivery_id"]

log = logging.getLogger("clearance.webhooks")


def delivery_id(endpoint: str, seq: int) -> str:
    """One id per (endpoint, audit event): the key that makes a second queued copy impossible,
    and the id receivers use to drop a repeated delivery."""
    return f"whd_{endpoint}_{seq}"


class WebhookOutbox:
    """One sender's view of the outbox: its endpoints (id -> URL), the event types it sends,
    how many rows it takes at a time and how long its claims hold."""

    def __init__(self, store: SqlStore, endpoints: Mapping[str, str], events: Sequence[str], *, worker_id: str,
                 batch: int, lease_seconds: float, retention_days: float) -> None:  # fmt: skip
        self.store, self.endpoints, self.events = store, dict(endpoints), tuple(events)
        self.worker_id, self.batch, self.lease_seconds, self.retention_days = worker_id, batch, lease_seconds, retention_days
        self._pruned_at = 0.0

    # -- transactions ---------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction. On SQLite, the store's own (``BEGIN IMMEDIATE``: the writer lock,
        which is what makes one worker at a time queue and claim). On PostgreSQL, a plain one:
        the row locks taken below do that, without holding up decisions on the chain head."""
        if self.store.dialect == "sqlite":
            with self.store.write() as tx:
                yield tx.conn
        else:
            with self.store.engine.connect() as conn, conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.store.read() as tx:
            yield tx.conn

    def _for_update(self, stmt: Any, *, skip_locked: bool = False) -> Any:
        if self.store.dialect == "postgresql":
            return stmt.with_for_update(skip_locked=skip_locked)
        return stmt

    # -- queueing -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Give each new endpoint a cursor at the current end of the audit trail. Run at startup,
        before requests are served, so nothing that happens while serving is missed."""
        now = utcnow()
        with self._write() as conn:
            known = set(conn.execute(select(t.webhook_cursors.c.endpoint_id)
                                     .where(t.webhook_cursors.c.endpoint_id.in_(self.endpoints))).scalars())  # fmt: skip
            missing = [e for e in self.endpoints if e not in known]
            if not missing:
                return
            head = conn.execute(select(func.coalesce(func.max(t.events.c.seq), 0))).scalar_one()
            for e in missing:
                stmt = _insert(conn)(t.webhook_cursors).values(endpoint_id=e, url=self.endpoints[e], seq=head, updated_at=now)
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["endpoint_id"]))

    def _has_new_events(self, conn: Connection) -> bool:
        c = t.webhook_cursors.c
        low = conn.execute(select(func.min(c.seq)).where(c.endpoint_id.in_(self.endpoints))).scalar()
        if low is None:
            return False
        e = t.events.c
        return conn.execute(select(e.seq).where(e.type.in_(self.events), e.seq > low).limit(1)).first() is not None

    def _queue(self, conn: Connection, now: datetime) -> int:
        c, e = t.webhook_cursors.c, t.events.c
        cursors = conn.execute(self._for_update(select(c.endpoint_id, c.seq).where(c.endpoint_id.in_(self.endpoints))
                                                .order_by(c.endpoint_id))).all()  # fmt: skip
        queued = 0
        for endpoint, cursor in cursors:
            rows = conn.execute(select(e.seq, e.type, e.body).where(e.type.in_(self.events), e.seq > cursor)
                                .order_by(e.seq).limit(self.batch)).all()  # fmt: skip
            if not rows:
                continue
            for seq, type_, body in rows:
                did = delivery_id(endpoint, seq)
                payload = _payload(conn, did, json.loads(body))
                stmt = _insert(conn)(t.webhook_deliveries).values(
                    delivery_id=did, endpoint_id=endpoint, url=self.endpoints[endpoint], seq=seq, event_type=type_,
                    body=json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str), state="pending",
                    attempts=0, next_attempt_at=now, created_at=now,
                )  # fmt: skip
                queued += conn.execute(stmt.on_conflict_do_nothing(index_elements=["delivery_id"])).rowcount or 0
            conn.execute(update(t.webhook_cursors).where(c.endpoint_id == endpoint).values(seq=rows[-1][0], updated_at=now))
        return queued

    def _claim(self, conn: Connection, now: datetime) -> list[Delivery]:
        d = t.webhook_deliveries.c
        due = and_(d.state == "pending", d.next_attempt_at <= now, or_(d.lease_until.is_(None), d.lease_until <= now),
                   d.endpoint_id.in_(self.endpoints))  # fmt: skip
        q = select(d.delivery_id, d.url, d.event_type, d.body, d.attempts).where(due).order_by(d.next_attempt_at, d.seq)
        rows = conn.execute(self._for_update(q.limit(self.batch), skip_locked=True)).all()
        claimed = []
        until = now + timedelta(seconds=self.lease_seconds)
        for did, url, type_, body, attempts in rows:
            res = conn.execute(update(t.webhook_deliveries).where(d.delivery_id == did, due)
                               .values(leased_by=self.worker_id, lease_until=until, attempts=attempts + 1))  # fmt: skip
            if res.rowcount == 1:
                claimed.append(Delivery(did, url, type_, body, attempts + 1))
        return claimed

    def _next_due(self, conn: Connection) -> datetime | None:
        d = t.webhook_deliveries.c
        return conn.execute(select(func.min(func.coalesce(d.lease_until, d.next_attempt_at)))
                            .where(d.state == "pending", d.endpoint_id.in_(self.endpoints))).scalar()  # fmt: skip

    def step(self) -> tuple[list[Delivery], float | None]:
        """Queue new events and claim the due deliveries (blocking; runs in a thread).
        Returns what this worker now holds, and in how many seconds the next one falls due."""
        now = utcnow()
        with self._read() as conn:
            new = self._has_new_events(conn)
            due = self._next_due(conn)
        if not new and (due is None or _utc(due) > now):
            return [], None if due is None else (_utc(due) - now).total_seconds()
        with self._write() as conn:
            now = utcnow()
            if new:
                self._queue(conn, now)
            claimed = self._claim(conn, now)
        self._prune()
        return claimed, None

    def record(self, results: Sequence[Attempt]) -> None:
        """Write down what the receivers answered; a delivery whose lease was lost (this worker
        took longer than ``lease_seconds``) is left to whoever holds it now."""
        if not results:
            return
        now = utcnow()
        d = t.webhook_deliveries.c
        with self._write() as conn:
            for r in results:
                mine = and_(d.delivery_id == r.delivery.delivery_id, d.leased_by == self.worker_id, d.state == "pending")
                values: dict[str, Any] = {"lease_until": None, "leased_by": None, "last_status": r.status,
                                          "last_error": r.error}  # fmt: skip
                if r.state == "delivered":
                    values.update(state="delivered", finished_at=now)
                elif r.state == "failed":
                    values.update(state="failed", finished_at=now)
                elif r.state == "retry":
                    values.update(next_attempt_at=now + timedelta(seconds=r.delay))
                else:  # released: cancelled at shutdown before an answer; the attempt does not count
                    values.update(attempts=r.delivery.attempts - 1)
                if conn.execute(update(t.webhook_deliveries).where(mine).values(**values)).rowcount != 1:
                    log.warning("webhook delivery %s: lease lost before the answer was recorded", r.delivery.delivery_id)

    def _prune(self) -> None:
        """Forget finished deliveries older than ``retention_days`` (at most once an hour)."""
        if time.monotonic() - self._pruned_at < 3600:
            return
        self._pruned_at = time.monotonic()
        cutoff = utcnow() - timedelta(days=self.retention_days)
        d = t.webhook_deliveries.c
        with self._write() as conn:
            conn.execute(delete(t.webhook_deliveries).where(d.state != "pending", d.finished_at < cutoff))

    def backlog(self) -> int:
        """Deliveries to this server's endpoints queued and not yet delivered or given up (for the
        metrics gauge; rows left for an endpoint no longer configured are not counted)."""
        d = t.webhook_deliveries.c
        with self._read() as conn:
            q = select(func.count()).where(d.state == "pending", d.endpoint_id.in_(self.endpoints))
            return int(conn.execute(q).scalar_one())


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _payload(conn: Connection, did: str, event: dict[str, Any]) -> dict[str, Any]:
    """The body sent for one audit event: the approval as it stood at that event.

    Built when the delivery is queued and stored, so every retry sends the same bytes, and a
    late ``approval.requested`` still says ``pending`` even if the approval was resolved since.
    """
    p = event.get("payload") or {}
    if event.get("type") == "drift.detected":  # not an approval's: the alert as the chain holds it
        return {"id": did, "type": "drift.detected", "created_at": event.get("created_at"), "event_id": event.get("event_id"),
                "seq": event.get("seq"), "request_id": event.get("request_id"), "drift": p}  # fmt: skip
    approval_id = p.get("approval_id")
    row = conn.execute(select(t.approvals).where(t.approvals.c.approval_id == approval_id)).mappings().first()
    data = dict(row["data"] or {}) if row else {}
    approval: dict[str, Any] = {
        "approval_id": approval_id,
        "request_id": event.get("request_id") or (row["request_id"] if row else None),
        "trace_id": event.get("trace_id"),
        "status": "pending",
        "tool": data.get("tool"),
        "actor": data.get("actor"),
        "domain": data.get("domain"),
        "value": data.get("value"),
        "arguments": data.get("arguments"),
        "reason": data.get("reason"),
        "approvals_required": row["approvals_required"] if row else p.get("approvals_required"),
        "created_at": _iso(row["created_at"]) if row else None,
        "expires_at": _iso(row["expires_at"]) if row else p.get("expires_at"),
        "resolved_at": None,
        "resolved_by": None,
        "comment": None,
    }
    type_ = event.get("type")
    if type_ == "approval.resolved":
        approval.update(status=p.get("resolution"), resolved_by=p.get("approver"), comment=p.get("comment"),
                        resolved_at=event.get("created_at"))  # fmt: skip
    elif type_ == "approval.expired":
        approval.update(status="expired", resolved_at=event.get("created_at"))
    return {"id": did, "type": type_, "created_at": event.get("created_at"), "event_id": event.get("event_id"),
            "seq": event.get("seq"), "approval": approval}  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None
