"""Outbound approval webhooks: the server POSTs ``approval.requested``, ``approval.resolved`` and
``approval.expired`` to each configured URL, signed, retried, exactly once per endpoint.

Why it is driven by the audit trail rather than by the request that resolved an approval:
approvals are created, resolved and expired by any server worker, by ``clearance`` on the
command line and by embedded engines sharing the store; the audit trail is the one durable,
ordered record of all of them. Each worker's sender

1. **queues**: under a lock on the endpoint's row in ``webhook_cursors`` (``BEGIN IMMEDIATE`` on
   SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL) it reads the approval events after the
   endpoint's cursor, writes one ``webhook_deliveries`` row per event (its key is derived from
   the endpoint and the event's ``seq``, so a second copy cannot exist) and moves the cursor;
2. **claims** due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so no other
   worker sends them while the lease holds, and counts the attempt;
3. **sends** them with httpx, outside any transaction, and records the answer: delivered,
   final failure, or a retry time (exponential backoff with jitter, or ``Retry-After``).

A crash after queueing loses nothing (the rows are durable); a crash while sending leaves a
lease that lapses, and the delivery is sent again with the same ``webhook-id``, so receivers
that remember ids see each event once. That is the only case of a second send.

A new endpoint starts at the current end of the audit trail: it is told about what happens
from then on, not about the whole history.

Each request carries ``Clearance-Event`` and is signed as Standard Webhooks, with the delivery
id as ``webhook-id`` (:mod:`clearance.signing`); receivers check it with
:func:`clearance.signing.verify`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from clearance._version import __version__
from clearance.model import new_id, utcnow
from clearance.retry_after import retry_after_seconds
from clearance.signing import signed_headers
from clearance.store import schema as t
from clearance.store import SqlStore

__all__ = ["EVENTS", "ApprovalWebhookSender", "WebhookSettings"]

log = logging.getLogger("clearance.server.webhooks")

#: The audit event types that are sent.
EVENTS = ("approval.requested", "approval.resolved", "approval.expired")
EVENT_HEADER = "Clearance-Event"

# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSettings:
    """Where and how approval webhooks are sent.

    ``backoff_seconds`` is the first retry's delay; each later one doubles, up to
    ``max_backoff_seconds``, and is drawn between half and all of that (jitter, so that many
    failed deliveries do not all come back at once). A ``Retry-After`` answer is honoured up
    to ``max_retry_after_seconds``. ``lease_seconds`` must outlast one request
    (``timeout_seconds``): past it, another worker may send the delivery again.
    """

    urls: tuple[str, ...]
    secret: str
    events: tuple[str, ...] = EVENTS
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 600.0
    max_retry_after_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    batch: int = 50
    lease_seconds: float | None = None
    retention_days: float = 7.0
    shutdown_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(dict.fromkeys(u.strip() for u in self.urls if u.strip())))
        if not self.urls:
            raise ValueError("webhooks need at least one URL")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"a webhook URL must start with http:// or https://, got {url!r}")
        if not self.secret:
            raise ValueError("webhooks need a signing secret (--webhook-secret or CLEARANCE_WEBHOOK_SECRET)")
        signed_headers(self.secret, "check", b"")  # a malformed whsec_ secret fails at start, not at each send
        unknown = set(self.events) - set(EVENTS)
        if unknown:
            raise ValueError(f"unknown webhook events {sorted(unknown)}; known: {list(EVENTS)}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @property
    def lease(self) -> float:
        return self.lease_seconds if self.lease_seconds is not None else self.timeout_seconds + 30.0

    @classmethod
    def resolve(cls, urls: Sequence[str] = (), secret: str | None = None, environ: Mapping[str, str] | None = None,
                **kw: Any) -> WebhookSettings | None:  # fmt: skip
        """Settings from explicit values, else ``CLEARANCE_WEBHOOK_URLS`` (comma-separated) and
        ``CLEARANCE_WEBHOOK_SECRET``; ``None`` when no URL is configured."""
        env = os.environ if environ is None else environ
        found = [u for u in urls if u.strip()] or [u for u in env.get("CLEARANCE_WEBHOOK_URLS", "").split(",") if u.strip()]
        if not found:
            return None
        return cls(urls=tuple(found), secret=secret or env.get("CLEARANCE_WEBHOOK_SECRET", ""), **kw)


def endpoint_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def delivery_id(endpoint: str, seq: int) -> str:
    """One id per (endpoint, audit event): the key that makes a second queued copy impossible,
    and the id receivers use to drop a repeated delivery."""
    return f"whd_{endpoint}_{seq}"


# -- the sender -----------------------------------------------------------------------


@dataclass
class _Claimed:
    delivery_id: str
    url: str
    event_type: str
    body: str
    attempts: int


@dataclass
class _Result:
    delivery: _Claimed
    state: str  # delivered | retry | failed | released
    status: int | None = None
    error: str | None = None
    delay: float = 0.0


@dataclass
class ApprovalWebhookSender:
    """Queues, claims and sends the webhook deliveries of one server worker (see the module doc).

    ``on_result(event_type, outcome)`` is told of each attempt's outcome (``delivered``,
    ``retry``, ``failed``) for metrics.
    """

    store: SqlStore
    settings: WebhookSettings
    on_result: Callable[[str, str], None] | None = None
    worker_id: str = field(default_factory=lambda: new_id("whw"))

    def __post_init__(self) -> None:
        self._endpoints = {endpoint_id(u): u for u in self.settings.urls}
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
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
                                     .where(t.webhook_cursors.c.endpoint_id.in_(self._endpoints))).scalars())  # fmt: skip
            missing = [e for e in self._endpoints if e not in known]
            if not missing:
                return
            head = conn.execute(select(func.coalesce(func.max(t.events.c.seq), 0))).scalar_one()
            for e in missing:
                stmt = _insert(conn)(t.webhook_cursors).values(endpoint_id=e, url=self._endpoints[e], seq=head, updated_at=now)
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["endpoint_id"]))

    def _has_new_events(self, conn: Connection) -> bool:
        c = t.webhook_cursors.c
        low = conn.execute(select(func.min(c.seq)).where(c.endpoint_id.in_(self._endpoints))).scalar()
        if low is None:
            return False
        e = t.events.c
        return conn.execute(select(e.seq).where(e.type.in_(self.settings.events), e.seq > low).limit(1)).first() is not None

    def _queue(self, conn: Connection, now: datetime) -> int:
        c, e = t.webhook_cursors.c, t.events.c
        cursors = conn.execute(self._for_update(select(c.endpoint_id, c.seq).where(c.endpoint_id.in_(self._endpoints))
                                                .order_by(c.endpoint_id))).all()  # fmt: skip
        queued = 0
        for endpoint, cursor in cursors:
            rows = conn.execute(select(e.seq, e.type, e.body).where(e.type.in_(self.settings.events), e.seq > cursor)
                                .order_by(e.seq).limit(self.settings.batch)).all()  # fmt: skip
            if not rows:
                continue
            for seq, type_, body in rows:
                did = delivery_id(endpoint, seq)
                payload = _payload(conn, did, json.loads(body))
                stmt = _insert(conn)(t.webhook_deliveries).values(
                    delivery_id=did, endpoint_id=endpoint, url=self._endpoints[endpoint], seq=seq, event_type=type_,
                    body=json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str), state="pending",
                    attempts=0, next_attempt_at=now, created_at=now,
                )  # fmt: skip
                queued += conn.execute(stmt.on_conflict_do_nothing(index_elements=["delivery_id"])).rowcount or 0
            conn.execute(update(t.webhook_cursors).where(c.endpoint_id == endpoint).values(seq=rows[-1][0], updated_at=now))
        return queued

    def _claim(self, conn: Connection, now: datetime) -> list[_Claimed]:
        d = t.webhook_deliveries.c
        due = and_(d.state == "pending", d.next_attempt_at <= now, or_(d.lease_until.is_(None), d.lease_until <= now),
                   d.endpoint_id.in_(self._endpoints))  # fmt: skip
        q = select(d.delivery_id, d.url, d.event_type, d.body, d.attempts).where(due).order_by(d.next_attempt_at, d.seq)
        rows = conn.execute(self._for_update(q.limit(self.settings.batch), skip_locked=True)).all()
        claimed = []
        until = now + timedelta(seconds=self.settings.lease)
        for did, url, type_, body, attempts in rows:
            res = conn.execute(update(t.webhook_deliveries).where(d.delivery_id == did, due)
                               .values(leased_by=self.worker_id, lease_until=until, attempts=attempts + 1))  # fmt: skip
            if res.rowcount == 1:
                claimed.append(_Claimed(did, url, type_, body, attempts + 1))
        return claimed

    def _next_due(self, conn: Connection) -> datetime | None:
        d = t.webhook_deliveries.c
        return conn.execute(select(func.min(func.coalesce(d.lease_until, d.next_attempt_at)))
                            .where(d.state == "pending", d.endpoint_id.in_(self._endpoints))).scalar()  # fmt: skip

    def step(self) -> tuple[list[_Claimed], float | None]:
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

    def record(self, results: Sequence[_Result]) -> None:
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
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)
        d = t.webhook_deliveries.c
        with self._write() as conn:
            conn.execute(delete(t.webhook_deliveries).where(d.state != "pending", d.finished_at < cutoff))

    def backlog(self) -> int:
        """Deliveries to this server's endpoints queued and not yet delivered or given up (for the
        metrics gauge; rows left for an endpoint no longer configured are not counted)."""
        d = t.webhook_deliveries.c
        with self._read() as conn:
            q = select(func.count()).where(d.state == "pending", d.endpoint_id.in_(self._endpoints))
            return int(conn.execute(q).scalar_one())

    # -- sending --------------------------------------------------------------------------
    def _retry_delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.settings.max_retry_after_seconds)
        ceiling = min(self.settings.max_backoff_seconds, self.settings.backoff_seconds * 2 ** (attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _retry_or_fail(self, c: _Claimed, status: int | None, error: str, retry_after: float | None = None) -> _Result:
        if c.attempts >= self.settings.max_attempts:
            log.warning("webhook delivery %s to %s failed after %d attempts: %s", c.delivery_id, c.url, c.attempts, error)
            return _Result(c, "failed", status, error)
        return _Result(c, "retry", status, error, self._retry_delay(c.attempts, retry_after))

    async def send(self, client: Any, c: _Claimed) -> _Result:
        import httpx

        body = c.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"clearance-webhooks/{__version__}",
            EVENT_HEADER: c.event_type,
            "Clearance-Attempt": str(c.attempts),
            **signed_headers(self.settings.secret, c.delivery_id, body),
        }
        try:
            resp = await client.post(c.url, content=body, headers=headers, timeout=self.settings.timeout_seconds)
        except asyncio.CancelledError:
            return _Result(c, "released", None, "cancelled at shutdown")
        except httpx.TimeoutException as exc:
            return self._retry_or_fail(c, None, f"timed out: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return self._retry_or_fail(c, None, f"{type(exc).__name__}: {exc}")
        code = resp.status_code
        if 200 <= code < 300:
            return _Result(c, "delivered", code)
        text = f"HTTP {code}: {resp.text[:200]}"
        if code >= 500 or code in (408, 429):
            return self._retry_or_fail(c, code, text, retry_after_seconds(resp.headers))
        log.warning("webhook delivery %s to %s refused with %d; not retried", c.delivery_id, c.url, code)
        return _Result(c, "failed", code, text)

    # -- the background task --------------------------------------------------------------
    def wake(self) -> None:
        """Look for work now rather than at the next poll (thread-safe)."""
        loop, wake = getattr(self, "_loop", None), self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        await asyncio.to_thread(self.prepare)
        self._task = asyncio.create_task(self._run(), name="clearance-webhooks")

    async def stop(self) -> None:
        """Let the round in flight finish (up to ``shutdown_grace_seconds``), then cancel it;
        deliveries cut short are released for the next start, or for another worker."""
        if self._task is None or self._stopping is None:
            return
        self._stopping.set()
        self.wake()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.settings.shutdown_grace_seconds)
        except asyncio.TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    async def _run(self) -> None:
        import httpx

        assert self._wake is not None and self._stopping is not None
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed, due_in = await asyncio.to_thread(self.step)
                    if claimed:
                        results = await self._send_all(client, claimed)
                        await asyncio.to_thread(self.record, results)
                        for r in results:
                            if self.on_result is not None and r.state != "released":
                                self.on_result(r.delivery.event_type, r.state)
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a store hiccup must not end the loop
                    log.exception("webhook sender round failed; retrying")
                    due_in = None
                wait = self.settings.poll_seconds if due_in is None else min(self.settings.poll_seconds, max(due_in, 0.0))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass

    async def _send_all(self, client: Any, claimed: list[_Claimed]) -> list[_Result]:
        tasks = [asyncio.ensure_future(self.send(client, c)) for c in claimed]
        try:
            return list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            # Shutdown: release whatever had no answer, so a restart sends it at once.
            results = [task.result() if task.done() and not task.cancelled() else _Result(c, "released", None, "cancelled")
                       for task, c in zip(tasks, claimed)]  # fmt: skip
            await asyncio.to_thread(self.record, results)
            raise


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
