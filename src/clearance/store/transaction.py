"""One transaction: the storage vocabulary the engine composes, over either database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from clearance.store import schema as t
from clearance.store import postgres, sqlite
from clearance.store import statements as st
from clearance.store.envelope import SOURCE_VERSION, envelope
from clearance.store.sqlite.counts import SLOTS_OF_REQUEST, UsageCounts


#: Usage questions a SQLite store's :class:`UsageCounts` answers (cooldowns' "last" looks back
#: over a few seconds only, and stays in SQL).
_KEPT = ("count", "total")

#: The hot statements that only write (an INSERT or UPDATE whose result nobody reads).
_WRITES = frozenset(stmt for stmt, keys in st.HOT.items() if keys is not None)

#: Called with the transaction and the events it has just appended (see ``SqlStore.on_append``).
AppendHook = Callable[["SqlTx", Sequence[dict[str, Any]]], None]


class SqlTx:
    """One transaction. Methods are the storage vocabulary the engine composes."""

    def __init__(self, conn: Connection, prepared: dict[Any, st.Prepared] | None = None,
                 counts: UsageCounts | None = None, on_append: Sequence[AppendHook] = ()) -> None:  # fmt: skip
        self.conn = conn
        self._on_append = on_append  # called with each batch of appended events, inside this transaction
        self._prepared = prepared if prepared is not None else {}
        self._counts = counts  # a write transaction's view of the store's UsageCounts (SQLite)
        #: The sqlite3 connection under ``conn`` (hot statements run on it directly), else None.
        self._sqlite: sqlite3.Connection | None = None
        if conn.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection
            if isinstance(raw, sqlite3.Connection):
                self._sqlite = raw
        if self._sqlite is None:
            self._counts = None
        #: On PostgreSQL, where the writes of a hot statement wait to be sent with the next read.
        self._pipe = postgres.Pipeline.of(conn) if conn.dialect.name == "postgresql" else None
        # Read once per transaction and kept current by this transaction's own writes: the
        # policy head, the number of kill switches, the chain tip. Safe because writers are
        # serialised, so nothing else moves them while a write transaction is open.
        self._policy_head: int | None = None
        self._kill_count: int | None = None
        self._chain: tuple[int, str] | None = None
        if self._pipe is not None and self._pipe.locked and self._pipe.known is not None:
            # A batch's earlier operation read them, and nothing else can move them meanwhile.
            self._policy_head, self._kill_count, self._chain = self._pipe.known

    def _run(self, stmt: Any, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> Any:
        """Execute a hot-path statement (see :class:`st.Prepared`); ``stmt`` is one of ``st.HOT``
        or a usage lookup statement. Read rows with ``fetchone()``: the raw path gives a cursor."""
        prepared = self._prepared.get(stmt)
        if prepared is None:
            prepared = st.Prepared(stmt, self.conn.dialect, st.HOT.get(stmt))
            if len(self._prepared) < 1024:  # lookup shapes are few; never grow without bound
                self._prepared[stmt] = prepared
        if self._sqlite is not None:
            return sqlite.run(prepared, self._sqlite, params)
        if (pipe := self._pipe) is not None:
            if stmt in _WRITES:  # nothing is read back: sent with the next statement
                if isinstance(params, dict) or params is None:
                    pipe.queue(prepared.sql, prepared.values(params or {}))
                else:
                    for p in params:
                        pipe.queue(prepared.sql, prepared.values(p))
                return None
            return pipe.send(prepared.sql, prepared.values(params or {}))  # type: ignore[arg-type]
        return prepared.execute(self.conn, params)

    def _one(self, q: Any, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        r = self.conn.execute(q, params).mappings().first()
        return dict(r) if r else None

    def _all(self, q: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def _prelude(self, lookups: Sequence[tuple[Any, ...]] = (), now: datetime | None = None) -> list[Any]:
        """Read the policy head, kill switch count and chain tip, plus any usage lookups, in
        one statement; returns the lookups' raw values."""
        if lookups:
            r = self._run(st.lookup_statement(True, tuple(x[0] for x in lookups)), st.lookup_params(lookups, now)).fetchone()  # type: ignore[arg-type]
        else:
            r = self._run(st.PRELUDE).fetchone()
        if r is None:  # no chain_head row (never after migration): ask each separately
            self._policy_head = int(self.conn.execute(st.POLICY_HEAD).scalar_one())
            self._kill_count = None
            self._chain = (0, st.GENESIS)
            if lookups:
                return list(self._run(st.lookup_statement(False, tuple(x[0] for x in lookups)), st.lookup_params(lookups, now)).fetchone())  # type: ignore[arg-type]
            return []
        self._policy_head, self._kill_count, self._chain = int(r[0]), int(r[1]), (int(r[2]), str(r[3]))
        self._share()
        return list(r[4:])

    def _share(self) -> None:
        """Hand what this transaction knows of the policy head, kill switches and chain tip to
        the batch's next operation (PostgreSQL; see ``Pipeline.known``)."""
        pipe = self._pipe
        if pipe is not None and pipe.locked:
            head, kills, chain = self._policy_head, self._kill_count, self._chain
            pipe.known = None if head is None or kills is None or chain is None else (head, kills, chain)

    def usage_lookups(self, lookups: Sequence[tuple[Any, ...]], now: datetime) -> list[Any]:
        """Answer several usage questions (see :func:`clearance.policy.usage_lookups`) in one
        round trip, folded into the transaction's first read when it has not happened yet."""
        if not lookups:
            if self._policy_head is None:
                self._prelude()
            return []
        counts = self._counts
        if counts is not None and self._policy_head is None and any(lk[0] in _KEPT for lk in lookups):
            return self._lookups_with_counts(counts, lookups, now)
        if self._policy_head is None:
            values = self._prelude(lookups, now)
        else:
            values = list(self._run(st.lookup_statement(False, tuple(x[0] for x in lookups)), st.lookup_params(lookups, now)).fetchone())
        dialect = self.conn.dialect
        return [st.usage_value(key[0], value, dialect) for key, value in zip(lookups, values)]

    def _lookups_with_counts(self, counts: UsageCounts, lookups: Sequence[tuple[Any, ...]], now: datetime) -> list[Any]:
        """As :meth:`usage_lookups`, with counts and totals from :class:`UsageCounts` when it
        holds the state this transaction sees (the chain tip the prelude reads), else from SQL."""
        others = [lk for lk in lookups if lk[0] not in _KEPT]
        dialect = self.conn.dialect
        answers = {id(lk): st.usage_value(lk[0], v, dialect) for lk, v in zip(others, self._prelude(others, now))}
        wanted = [lk for lk in lookups if lk[0] in _KEPT]
        if counts.tip is None:  # nothing known (a new store, or counts dropped): known from here on
            counts.reset(self._chain)
        if counts.tip == self._chain:
            raw = self._sqlite
            assert raw is not None
            for lk in wanted:
                if lk[0] == "count":
                    answers[id(lk)] = counts.count(raw, lk[1], lk[2], lk[3], now, lk[4])
                else:
                    answers[id(lk)] = counts.total(raw, lk[1], lk[2], lk[3], now)
        else:  # someone else wrote since: ask SQL (cheaper than loading windows that may move again), keep counts from here on
            values = self._run(st.lookup_statement(False, tuple(lk[0] for lk in wanted)), st.lookup_params(wanted, now)).fetchone()
            for lk, v in zip(wanted, values):
                answers[id(lk)] = st.usage_value(lk[0], v, dialect)
            counts.reset(self._chain)
        return [answers[id(lk)] for lk in lookups]

    # -- decisions ------------------------------------------------------------------------
    def insert_decision(self, row: dict[str, Any]) -> None:
        self._run(st.INSERT_DECISION, row)

    def get_decision(self, request_id: str) -> dict[str, Any] | None:
        return self._one(st.GET_DECISION, {"request_id": request_id})

    def list_decisions(self, *, result: str | None, tool: str | None, actor: str | None, domain: str | None,
                       since: datetime | None, until: datetime | None, before: tuple[datetime, str] | None,
                       limit: int) -> list[dict[str, Any]]:  # fmt: skip
        """Decision rows newest first, by the columns given; ``before`` is the (decided_at,
        request_id) of the last row of the previous page. A scan: there are no secondary
        indexes on decisions (they would slow every decision), and this is for people."""
        d = t.decisions.c
        q = select(t.decisions).order_by(d.decided_at.desc(), d.request_id.desc()).limit(limit)
        for column, value in ((d.result, result), (d.tool, tool), (d.actor, actor), (d.domain, domain)):
            if value is not None:
                q = q.where(column == value)
        if since is not None:
            q = q.where(d.decided_at >= since)
        if until is not None:
            q = q.where(d.decided_at < until)
        if before is not None:
            q = q.where(or_(d.decided_at < before[0], and_(d.decided_at == before[0], d.request_id < before[1])))
        return self._all(q)

    # -- usage (rate limits, budgets, cooldowns) ------------------------------------------
    def add_usage(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self._run(st.INSERT_USAGE, [{"expires_at": None, **r, "active": True} for r in rows])
            counts = self._counts
            if counts is not None and counts.tip is not None:
                if counts.tip == self.chain_head():
                    counts.added(rows)
                else:
                    counts.reset()

    def keep_usage(self, request_id: str) -> None:
        """An approved call keeps its reserved slots for good."""
        slots = self._slots_of(request_id)
        self.conn.execute(update(t.usage).where(t.usage.c.request_id == request_id).values(expires_at=None))
        if slots is not None:
            self._counts.kept(slots)  # type: ignore[union-attr]

    def release_usage(self, request_id: str) -> None:
        slots = self._slots_of(request_id)
        self.conn.execute(update(t.usage).where(t.usage.c.request_id == request_id).values(active=False))
        if slots is not None:
            self._counts.released(slots)  # type: ignore[union-attr]

    def _slots_of(self, request_id: str) -> list[tuple[str, str, str, str | None, float | None]] | None:
        """The call's holding slots as stored, for the in-memory counts to follow a change of
        them; None when there are no counts to keep current (they are dropped if stale)."""
        counts = self._counts
        if counts is None or counts.tip is None:
            return None
        if counts.tip != self.chain_head():
            counts.reset()
            return None
        assert self._sqlite is not None
        return self._sqlite.execute(SLOTS_OF_REQUEST, (request_id,)).fetchall()

    def count(self, rule_id: str, actor: str, since: datetime, now: datetime, cap: int | None = None) -> int:
        """Calls holding a slot since ``since``; with ``cap``, counting stops there (a limit
        only needs to know whether it is reached, and this keeps busy actors cheap)."""
        params = {"rule_id": rule_id, "actor": actor, "since": since, "now": now, "cap": cap}
        return int(self.conn.execute(st.COUNT if cap is None else st.COUNT_CAPPED, params).scalar_one())

    def total_value(self, rule_id: str, actor: str, since: datetime, now: datetime) -> float:
        params = {"rule_id": rule_id, "actor": actor, "since": since, "now": now}
        return float(self.conn.execute(st.TOTAL, params).scalar_one())

    def last_at(self, rule_id: str, actor: str, target: str | None, now: datetime) -> datetime | None:
        params = {"rule_id": rule_id, "actor": actor, "target": target or "", "now": now}
        return st.usage_value("last", self.conn.execute(st.LAST, params).scalar_one(), self.conn.dialect)  # type: ignore[no-any-return]

    # -- approvals --------------------------------------------------------------------------
    def insert_approval(self, row: dict[str, Any]) -> None:
        self.conn.execute(st.INSERT_APPROVAL, row)

    def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        return self._one(select(t.approvals).where(t.approvals.c.approval_id == approval_id))

    def approval_for_request(self, request_id: str) -> dict[str, Any] | None:
        return self._one(select(t.approvals).where(t.approvals.c.request_id == request_id))

    def open_approvals(self, args_hash: str, now: datetime) -> list[dict[str, Any]]:
        """Approvals of calls with these arguments that are pending or approved and not past their
        deadline, newest first, at most 20 (the status index narrows the scan to those)."""
        return [dict(r) for r in self.conn.execute(st.OPEN_APPROVALS, {"now": now, "args_hash": args_hash}).mappings()]

    def list_approvals(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        q = select(t.approvals).order_by(t.approvals.c.created_at, t.approvals.c.approval_id).limit(limit)
        if status is not None:
            q = q.where(t.approvals.c.status == status)
        return self._all(q)

    def pending_expired(self, now: datetime) -> list[dict[str, Any]]:
        return self._all(select(t.approvals).where(t.approvals.c.status == "pending", t.approvals.c.expires_at <= now))

    def set_approval_status(self, approval_id: str, expected: str, values: dict[str, Any]) -> bool:
        """Compare-and-set, so that of two resolutions only one can move a pending approval."""
        a = t.approvals.c
        still = update(t.approvals).where(a.approval_id == approval_id, a.status == expected)
        moved = self.conn.execute(still.values(**values)).rowcount == 1
        if moved and self.conn.dialect.name == "postgresql":  # waiters on every replica, at commit
            postgres.notify_approval(self.conn, approval_id)
        return moved

    def add_vote(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.approval_votes), row)

    def votes(self, approval_id: str) -> list[dict[str, Any]]:
        v = t.approval_votes.c
        return self._all(select(t.approval_votes).where(v.approval_id == approval_id).order_by(v.at))

    # -- executions -------------------------------------------------------------------------
    def get_execution(self, request_id: str) -> dict[str, Any] | None:
        return self._one(select(t.executions).where(t.executions.c.request_id == request_id))

    def put_execution(self, row: dict[str, Any]) -> None:
        row = dict(row, result_summary=row.get("result_summary"))
        if self.get_execution(row["request_id"]) is None:
            self.conn.execute(insert(t.executions), row)
        else:
            self.conn.execute(update(t.executions).where(t.executions.c.request_id == row["request_id"]).values(**row))

    # -- outcomes ---------------------------------------------------------------------------
    def get_outcome(self, event_id: str) -> dict[str, Any] | None:
        return self._one(select(t.outcomes).where(t.outcomes.c.event_id == event_id))

    def insert_outcome(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.outcomes), row)

    def outcomes_for(self, request_id: str) -> list[dict[str, Any]]:
        o = t.outcomes.c
        return self._all(select(t.outcomes).where(o.request_id == request_id).order_by(o.recorded_at))

    # -- policy -----------------------------------------------------------------------------
    def policy_head(self) -> int:
        if self._policy_head is None:
            self._prelude()
        assert self._policy_head is not None
        return self._policy_head

    def get_policy(self, version: int) -> dict[str, Any] | None:
        return self._one(select(t.policies).where(t.policies.c.version == version))

    def insert_policy(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.policies), row)
        self._policy_head = None
        self._share()

    def list_policies(self) -> list[dict[str, Any]]:
        q = select(t.policies.c.version, t.policies.c.digest, t.policies.c.applied_at, t.policies.c.applied_by)
        return self._all(q.order_by(t.policies.c.version))

    # -- kill switches ----------------------------------------------------------------------
    def kill_switches(self) -> list[dict[str, Any]]:
        if self._policy_head is None:
            self._prelude()
        if self._kill_count == 0:  # the common case: no switch is on, no query needed
            return []
        return self._all(st.KILL_SWITCHES)

    def set_kill_switch(self, row: dict[str, Any]) -> None:
        self.clear_kill_switch(row["scope"], row["value"])
        self.conn.execute(insert(t.kill_switches), row)
        self._kill_count = None
        self._share()

    def clear_kill_switch(self, scope: str, value: str) -> bool:
        k = t.kill_switches.c
        self._kill_count = None
        self._share()
        return self.conn.execute(delete(t.kill_switches).where(k.scope == scope, k.value == value)).rowcount > 0

    # -- suspended runs ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self._one(select(t.runs).where(t.runs.c.run_id == run_id))

    def put_run(self, row: dict[str, Any]) -> None:
        row = dict(row)
        if self.get_run(row["run_id"]) is None:
            self.conn.execute(insert(t.runs), row)
        else:
            values = {k: v for k, v in row.items() if k not in ("run_id", "created_at")}
            self.conn.execute(update(t.runs).where(t.runs.c.run_id == row["run_id"]).values(**values))

    def set_run_lease(self, run_id: str, leased_by: str | None, leased_until: datetime | None) -> None:
        self.conn.execute(update(t.runs).where(t.runs.c.run_id == run_id).values(leased_by=leased_by, leased_until=leased_until))

    def run_approval(self, approval_id: str) -> dict[str, Any] | None:
        return self._one(select(t.run_approvals).where(t.run_approvals.c.approval_id == approval_id))

    def add_run_approval(self, approval_id: str, run_id: str) -> None:
        if self.run_approval(approval_id) is None:
            self.conn.execute(insert(t.run_approvals), {"approval_id": approval_id, "run_id": run_id, "consumed_at": None})

    def consume_run_approval(self, approval_id: str, now: datetime) -> bool:
        ra = t.run_approvals.c
        still = update(t.run_approvals).where(ra.approval_id == approval_id, ra.consumed_at.is_(None))
        return self.conn.execute(still.values(consumed_at=now)).rowcount == 1

    def chain_cut(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the last event archived and deleted by a prune, or None."""
        c = t.chain_cuts.c
        r = self.conn.execute(select(c.seq, c.hash).order_by(c.seq.desc()).limit(1)).first()
        return None if r is None else (int(r[0]), str(r[1]))

    def event_after(self, seq: int) -> dict[str, Any] | None:
        return self._whole([self._one(select(t.events).where(t.events.c.seq == seq + 1))])[0]

    def _whole(self, rows: list[Any]) -> list[Any]:
        """Event rows with their whole bodies: a lean ``decision.made`` gets its decision's JSON
        and its arguments back (from the decisions row) where ``decision_at`` and ``arguments_at``
        say, and its envelope (from its own columns) when ``source_version`` is set. A decision
        row that is gone or changed, or an edited column, leaves a body whose hash no longer
        holds, as any other edit would."""
        lean = [r for r in rows if r is not None and r.get("decision_at") is not None]
        if lean:
            d = t.decisions.c
            texts = {rid: (decision, arguments) for rid, decision, arguments in self.conn.execute(
                select(d.request_id, st.DECISION_TEXT, st.ARGUMENTS_TEXT).where(
                    d.request_id.in_({r["request_id"] for r in lean})))}  # fmt: skip
            for r in lean:
                decision, arguments = texts.get(r["request_id"], ("", ""))
                at, body = r["decision_at"], r["body"]
                body = body[:at] + decision + body[at:]
                if (args_at := r.get("arguments_at")) is not None:  # before the decision: unmoved by it
                    body = body[:args_at] + arguments + body[args_at:]
                if (source := r.get("source_version")) is not None:
                    before, after = envelope(r, source)
                    body = before + body + after
                r["body"] = body
        for r in rows:
            if r is not None:
                r.pop("decision_at", None)
                r.pop("arguments_at", None)
                r.pop("source_version", None)
        return rows

    # -- idempotency keys of the server ------------------------------------------------------
    def idempotent_answer(self, key_id: str, idem_key: str) -> tuple[str, str, int | None, str | None] | None:
        """``(fingerprint, state, status_code, body)`` kept for an ``Idempotency-Key``, or None."""
        r = self._run(st.GET_IDEMPOTENT, {"key_id": key_id, "idem_key": idem_key}).fetchone()
        return None if r is None else (r[0], r[1], r[2], r[3])

    def keep_idempotent_answer(self, key_id: str, idem_key: str, fingerprint: str, status: int, body: str | None,
                               now: datetime, *, request_id: str | None = None) -> None:  # fmt: skip
        """``request_id``: the answer is that decision's JSON, read from its row (``body`` None)."""
        self._run(st.INSERT_IDEMPOTENT, {"key_id": key_id, "idem_key": idem_key, "fingerprint": fingerprint,
                                       "state": "done", "status_code": status, "body": body, "created_at": now,
                                       "request_id": request_id})  # fmt: skip

    def prune_idempotent_answers(self, before: datetime) -> None:
        self.conn.execute(delete(t.idempotency_keys).where(t.idempotency_keys.c.created_at < before))

    # -- audit chain ------------------------------------------------------------------------
    def chain_head(self) -> tuple[int, str]:
        if self._chain is None:
            self._prelude()
        assert self._chain is not None
        return self._chain

    def append_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store consecutive events and move the chain head to the last of them."""
        if not rows:
            return
        stored = [_lean(r) for r in rows]
        self._run(st.INSERT_EVENT, stored[0] if len(stored) == 1 else stored)
        last = rows[-1]
        self._run(st.MOVE_HEAD, {"seq": last["seq"], "hash": last["hash"]})
        counts = self._counts
        if counts is not None and counts.tip is not None:
            if counts.tip == self.chain_head():
                counts.tip = (last["seq"], last["hash"])  # what it knows is still the whole truth
            else:
                counts.reset()
        self._chain = (last["seq"], last["hash"])
        self._share()
        for hook in self._on_append:
            hook(self, rows)

    def iter_events(self, batch: int = 1000) -> Iterator[dict[str, Any]]:
        last = 0
        while True:
            q = select(t.events).where(t.events.c.seq > last).order_by(t.events.c.seq).limit(batch)
            rows = self._whole([dict(r) for r in self.conn.execute(q).mappings()])
            if not rows:
                return
            yield from rows
            last = rows[-1]["seq"]

    def query_events(self, *, request_id: str | None = None, trace_id: str | None = None, type: str | None = None,
                     after_seq: int = 0, limit: int = 100, since: datetime | None = None,
                     until: datetime | None = None) -> list[dict[str, Any]]:  # fmt: skip
        e = t.events.c
        q = select(t.events).where(e.seq > after_seq).order_by(e.seq).limit(limit)
        if since is not None:
            q = q.where(e.created_at >= since)
        if until is not None:
            q = q.where(e.created_at < until)
        if request_id is not None:
            q = q.where(e.request_id == request_id)
        if trace_id is not None:
            q = q.where(e.trace_id == trace_id)
        if type is not None:
            q = q.where(e.type == type)
        return self._whole(self._all(q))

    # -- signed checkpoints of the chain and the state tables, for verification -------------
    def insert_checkpoint(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.audit_checkpoints), row)

    def get_checkpoint(self, seq: int, key_id: str) -> dict[str, Any] | None:
        c = t.audit_checkpoints.c
        return self._one(select(t.audit_checkpoints).where(c.seq == seq, c.key_id == key_id))

    def checkpoints(self, *, limit: int | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
        c = t.audit_checkpoints.c
        q = select(t.audit_checkpoints).order_by(*((c.seq.desc(), c.key_id) if newest_first else (c.seq, c.key_id)))
        return self._all(q if limit is None else q.limit(limit))

    def event_at(self, seq: int) -> dict[str, Any] | None:
        return self._whole([self._one(select(t.events).where(t.events.c.seq == seq))])[0]

    def iter_rows(self, table: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row of a table with a one-column key (``decisions``, ``approvals``, ``executions``,
        ``outcomes``, ``policies``, ``api_keys``), in pages by its key, never held whole."""
        tbl = t.metadata.tables[table]
        (key,) = tbl.primary_key.columns
        last: Any = None
        while True:
            q = select(tbl).order_by(key).limit(batch)
            rows = self._all(q if last is None else q.where(key > last))
            if not rows:
                return
            yield from rows
            last = rows[-1][key.name]


def _lean(row: dict[str, Any]) -> dict[str, Any]:
    """The row an event is stored as. A ``decision.made`` whose body holds ``row["decision_text"]``
    (the decisions row's JSON) is stored without it, ``decision_at`` saying where it goes;
    without ``row["arguments_text"]`` (the row's arguments, the action's first), ``arguments_at``
    saying where those go; and, when its columns rebuild the envelope around the payload
    exactly (:func:`envelope`), without that envelope, ``source_version`` saying which. Positions
    are in the stored text; the arguments go back first, then the envelope around it all."""
    text = row.get("decision_text")
    body = row["body"]
    at = body.find(text) if text else -1
    if at < 0:
        return {**row, "decision_at": None, "arguments_at": None, "source_version": None}
    body = body[:at] + body[at + len(text) :]
    args = row.get("arguments_text")
    # A key's text cannot occur inside a JSON string (its quotes would be escaped there), so the
    # first '"arguments":' followed by the text is the action's own, before the decision.
    found = body.find(f'"arguments":{args}', 0, at) if args else -1
    args_at = None
    if found >= 0:
        args_at = found + len('"arguments":')
        body = body[:args_at] + body[args_at + len(args) :]
        at -= len(args)
    source = None
    before, after = envelope(row, SOURCE_VERSION)
    if body.startswith(before) and body.endswith(after) and len(body) >= len(before) + len(after):
        source, cut = SOURCE_VERSION, len(before)
        body = body[cut : len(body) - len(after)]
        at -= cut
        args_at = None if args_at is None else args_at - cut
    return {**row, "body": body, "decision_at": at, "arguments_at": args_at, "source_version": source}
