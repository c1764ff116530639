"""The store on SQLAlchemy Core: SQLite (embedded default) or PostgreSQL, same code.

Writes are serialised: on SQLite with ``BEGIN IMMEDIATE``, on PostgreSQL by locking the audit
chain's head row, which every write transaction appends to anyway. Serialising writers is what
makes rate-limit counts, approval resolution and execution claims exact without retries, and it
keeps the audit chain linear.
"""

from __future__ import annotations

import bisect
import fcntl
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ColumnElement, Select

from clearance.model import RawJSON
from clearance.store import schema as t

__all__ = ["SqlStore", "SqlTx", "WouldBlock"]


class WouldBlock(Exception):
    """A non-blocking write found the store held by another writer; nothing was done."""

GENESIS = "0" * 64


# Hot-path statements are built once: constructing Core expressions costs more than running them.
_u = t.usage.c
_HOLDING = (_u.active.is_(True), or_(_u.expires_at.is_(None), _u.expires_at > bindparam("now")))
_USAGE_WINDOW = (_u.rule_id == bindparam("rule_id"), _u.actor == bindparam("actor"), _u.at > bindparam("since"), *_HOLDING)
_COUNT_CAPPED = select(func.count()).select_from(
    select(literal(1)).where(*_USAGE_WINDOW).limit(bindparam("cap")).subquery()
)
_COUNT = select(func.count()).where(*_USAGE_WINDOW)
_TOTAL = select(func.coalesce(func.sum(_u.value), 0.0)).where(*_USAGE_WINDOW)
_LAST = select(func.max(_u.at)).where(_u.rule_id == bindparam("rule_id"), _u.actor == bindparam("actor"),
                                      _u.target == bindparam("target"), *_HOLDING)  # fmt: skip
_POLICY_HEAD = select(func.coalesce(func.max(t.policies.c.version), 0))
_KILL_SWITCHES = select(t.kill_switches)
_CHAIN_HEAD = select(t.chain_head.c.seq, t.chain_head.c.hash).where(t.chain_head.c.id == 1)
# What every write transaction needs first, in one round trip: the policy head, whether any kill
# switch is on, and the audit chain's tip.
_PRELUDE = select(
    _POLICY_HEAD.scalar_subquery(),
    select(func.count()).select_from(t.kill_switches).scalar_subquery(),
    t.chain_head.c.seq,
    t.chain_head.c.hash,
).where(t.chain_head.c.id == 1)
_INSERT_DECISION = insert(t.decisions)
_INSERT_USAGE = insert(t.usage)
_INSERT_EVENT = insert(t.events)
_INSERT_APPROVAL = insert(t.approvals)
_MOVE_HEAD = update(t.chain_head).where(t.chain_head.c.id == 1)
_LOCK_HEAD = select(t.chain_head.c.id).where(t.chain_head.c.id == 1).with_for_update()
_GET_DECISION = select(t.decisions).where(t.decisions.c.request_id == bindparam("request_id"))
_ik = t.idempotency_keys.c
_GET_IDEMPOTENT = select(_ik.fingerprint, _ik.state, _ik.status_code, _ik.body).where(
    _ik.key_id == bindparam("key_id"), _ik.idem_key == bindparam("idem_key"))  # fmt: skip
_INSERT_IDEMPOTENT = insert(t.idempotency_keys)


_NOW = bindparam("now", type_=t.UTCDateTime())


def _lookup_column(kind: str, i: int) -> ColumnElement[Any]:
    """One usage question as a scalar subquery with parameters of its own (``r3``, ``a3``...)
    but for the shared ``now``."""
    holding = (_u.active.is_(True), or_(_u.expires_at.is_(None), _u.expires_at > _NOW))
    who = (_u.rule_id == bindparam(f"r{i}"), _u.actor == bindparam(f"a{i}"))
    window = (*who, _u.at > bindparam(f"s{i}"), *holding)
    if kind == "last":
        return select(func.max(_u.at)).where(*window, _u.target == bindparam(f"t{i}")).scalar_subquery()
    if kind == "total":
        return select(func.coalesce(func.sum(_u.value), 0.0)).where(*window).scalar_subquery()
    if kind == "count":
        capped = select(literal(1)).where(*window).limit(bindparam(f"c{i}")).subquery()
        return select(func.count()).select_from(capped).scalar_subquery()
    raise ValueError(f"unknown usage lookup {kind!r}")


#: (with prelude?, kinds of the lookups) -> the one SELECT that answers them all.
_LOOKUP_STATEMENTS: dict[tuple[bool, tuple[str, ...]], Select[Any]] = {}


def _lookup_statement(prelude: bool, kinds: tuple[str, ...]) -> Select[Any]:
    stmt = _LOOKUP_STATEMENTS.get((prelude, kinds))
    if stmt is None:
        columns = [_lookup_column(kind, i) for i, kind in enumerate(kinds)]
        stmt = _PRELUDE.add_columns(*columns) if prelude else select(*columns)
        if len(_LOOKUP_STATEMENTS) < 512:  # shapes are combinations of a rule set's limits: few
            _LOOKUP_STATEMENTS[(prelude, kinds)] = stmt
    return stmt


def _lookup_params(lookups: Sequence[tuple[Any, ...]], now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {"now": now}
    for i, (kind, rule_id, actor, *rest) in enumerate(lookups):
        params[f"r{i}"], params[f"a{i}"] = rule_id, actor
        if kind == "last":
            params[f"t{i}"], params[f"s{i}"] = rest[0] or "", rest[1]
        else:
            params[f"s{i}"] = rest[0]
            if kind == "count":
                params[f"c{i}"] = rest[1]
    return params


def _usage_value(kind: str, value: Any, dialect: Any) -> Any:
    if kind == "count":
        return int(value)
    if kind == "total":
        return float(value)
    # Aggregates may bypass the column type on SQLite; route the value through it.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return t.UTCDateTime().process_result_value(value, dialect)


#: dialect -> its timestamp bind processor, shared by every prepared statement.
_TIMESTAMP_PROCESSORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _bind_processor(type_: Any, dialect: Any) -> Any:
    """SQLAlchemy's bind processor for ``type_``; for timestamps, one that remembers its last
    few answers, since a decision binds the same instant to five or more parameters."""
    if not isinstance(type_, t.UTCDateTime):
        return type_.dialect_impl(dialect).bind_processor(dialect)
    shared = _TIMESTAMP_PROCESSORS.get(dialect)
    if shared is None:
        shared = _TIMESTAMP_PROCESSORS[dialect] = _memoised(type_.dialect_impl(dialect).bind_processor(dialect))
    return shared


def _memoised(proc: Any) -> Any:
    memo: dict[datetime, Any] = {}

    def process(value: datetime) -> Any:
        # Equal datetimes are the same instant, which every zone binds the same way.
        found = memo.get(value)
        if found is None:
            if len(memo) >= 64:
                memo.clear()
            found = memo[value] = proc(value)
        return found

    return process


class _Prepared:
    """A hot-path Core statement, compiled once per dialect and run through
    ``Connection.exec_driver_sql``.

    ``Connection.execute`` redoes, on every call, work whose result never changes for a
    statement built once: the compiled-cache lookup, matching parameters to binds and choosing
    each bind's type processor. On a decision's five statements that is most of the Python
    time spent in the store. Here it is done once; each call only applies the (SQLAlchemy)
    bind processors and hands the dialect's own SQL to the driver on the same connection, in
    the same transaction, with SQLAlchemy's error handling. Rows come back unprocessed
    (DBAPI values): callers read plain numbers and strings, or convert (see ``_usage_value``).
    """

    __slots__ = ("binds", "names", "order", "positional", "processed", "sql")

    def __init__(self, stmt: Any, dialect: Any, keys: Sequence[str] | None) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        self.sql: str = compiled.string
        self.positional: bool = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(by_name)
        # Each bind once, with the value it keeps when the caller does not supply it: literals
        # such as ``chain_head.id = 1`` keep theirs, a column left out of an INSERT is NULL
        # (as with ``insert(table)``).
        self.binds = tuple((n, b.effective_value if b.value is not None else None) for n, b in by_name.items())
        processors = [_bind_processor(b.type, dialect) for b in by_name.values()]
        self.processed = tuple((i, proc) for i, proc in enumerate(processors) if proc is not None)
        # Positional SQL may name one bind several times (``now``): processed once, placed twice.
        self.order = tuple(self.names.index(n) for n in compiled.positiontup) if self.positional else ()

    def _values(self, params: dict[str, Any]) -> Any:
        get = params.get
        values = [get(name, default) for name, default in self.binds]
        for i, proc in self.processed:
            if (value := values[i]) is not None:
                values[i] = proc(value)
        if self.positional:
            return tuple([values[i] for i in self.order])
        return dict(zip(self.names, values))

    def execute(self, conn: Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> Any:
        if isinstance(params, dict) or params is None:
            return conn.exec_driver_sql(self.sql, self._values(params or {}))
        return conn.exec_driver_sql(self.sql, [self._values(p) for p in params])

    def execute_sqlite(self, raw: sqlite3.Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> _Rows:
        """As :meth:`execute`, straight on the sqlite3 connection of the same transaction: on a
        decision's statements SQLAlchemy's execution context and result set-up cost more than
        SQLite itself. Errors are raised as SQLAlchemy would raise them."""
        try:
            if isinstance(params, dict) or params is None:
                return _Rows(raw.execute(self.sql, self._values(params or {})))
            return _Rows(raw.executemany(self.sql, [self._values(p) for p in params]))
        except sqlite3.Error as exc:
            raise sa_exc.DBAPIError.instance(self.sql, params, exc, sqlite3.Error) from exc


class _Rows:
    """The little of a SQLAlchemy result that the hot path uses, over a sqlite3 cursor."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor

    def first(self) -> Any:
        return self.cursor.fetchone()

    def one(self) -> Any:
        row = self.cursor.fetchone()
        if row is None:
            raise sa_exc.NoResultFound("No row was found when one was required")
        return row


_USAGE_KEYS = ("request_id", "rule_id", "actor", "target", "value", "at", "active", "expires_at")
_EVENT_KEYS = ("seq", "event_id", "trace_id", "request_id", "type", "created_at", "body", "prev_hash", "hash")
_DECISION_KEYS = tuple(c.name for c in t.decisions.columns)
#: statement -> the column keys its INSERT or UPDATE is compiled for (None: a SELECT).
_HOT: dict[Any, tuple[str, ...] | None] = {
    _INSERT_DECISION: _DECISION_KEYS, _INSERT_USAGE: _USAGE_KEYS, _INSERT_EVENT: _EVENT_KEYS,
    _MOVE_HEAD: ("seq", "hash"), _PRELUDE: None, _GET_IDEMPOTENT: None,
    _INSERT_IDEMPOTENT: ("key_id", "idem_key", "fingerprint", "state", "status_code", "body", "created_at"),
}  # fmt: skip


_JSON = json.JSONEncoder(default=str, ensure_ascii=False)  # json.dumps(value, default=str, ensure_ascii=False)


def _json_dumps(value: Any) -> str:
    """JSON columns take only what json can write; anything else is stored as its text.
    :class:`RawJSON` is JSON already and is stored as it is."""
    if type(value) is RawJSON:
        return str(value)
    return _JSON.encode(value)


class UsageCounts:
    """Rate-limit counts kept in memory by a SQLite store, so that a decision need not count
    every slot of a busy actor's window (SQLite counts an index range row by row: a limit of
    thousands an hour made each decision scan thousands of entries).

    What it knows is the ``usage`` table as of one audit chain tip (:attr:`tip`): every write
    transaction appends to the chain, so a tip that moved without this store seeing the writes
    (another process, another engine on the file) means the counts may be stale, and they are
    not used until reloaded. The store's own transactions keep it current as they go: slots
    added (:meth:`SqlTx.add_usage`), the tip moved (:meth:`SqlTx.append_events`); anything
    else that changes slots (``keep_usage``, ``release_usage``) and any rollback drop it all.
    Per (rule, actor, window length) it loads, on first use while valid, the holding slots of
    the window: ``at`` of the permanent ones in order, and ``(at, expires_at)`` of reservations;
    a count then is a bisection. Values are compared as SQLite compares them, in their stored
    text form. Only used inside write transactions, which are serialised, so it needs no lock.
    """

    __slots__ = ("loads", "series", "tip", "to_text")

    #: Windows kept at most (one per rule, actor and window length in use).
    MAX_SERIES = 10_000

    def __init__(self, to_text: Any) -> None:
        self.to_text = to_text  # datetime -> its stored text
        self.tip: tuple[int, str] | None = None
        self.series: dict[tuple[str, str, Any], _Series] = {}
        self.loads = 0  # diagnostics

    def reset(self, tip: tuple[int, str] | None = None) -> None:
        self.tip = tip
        self.series.clear()

    def count(self, raw: sqlite3.Connection, rule_id: str, actor: str, since: datetime, now: datetime, cap: int | None) -> int:
        since_s, now_s = self.to_text(since), self.to_text(now)
        key = (rule_id, actor, now - since)
        series = self.series.get(key)
        if series is None or since_s < series.floor:  # first use, or the clock went back: load
            if series is None and len(self.series) >= self.MAX_SERIES:
                self.series.clear()  # many actors: start again rather than keep every one's window
            series = self.series[key] = _Series(since_s)
            self.loads += 1
            for at, expires in raw.execute(_HOLDING_SLOTS, (rule_id, actor, since_s)):
                series.add(at, expires)
        elif since_s > series.floor:  # the window moved on: forget what left it
            series.advance(since_s)
        n = len(series.ats) + sum(1 for at, expires in series.expiring if at > since_s and expires > now_s)
        return n if cap is None else min(n, cap)

    def added(self, rows: Sequence[dict[str, Any]]) -> None:
        for (rule_id, actor, _), series in self.series.items():
            for r in rows:
                if r["rule_id"] == rule_id and r["actor"] == actor:
                    expires = r.get("expires_at")
                    series.add(self.to_text(r["at"]), None if expires is None else self.to_text(expires))


#: The holding slots of a window, as they are stored (the count's filter on expiry is applied
#: in memory, where ``now`` is known).
_HOLDING_SLOTS = "SELECT at, expires_at FROM usage WHERE rule_id = ? AND actor = ? AND at > ? AND active IS 1"


class _Series:
    __slots__ = ("ats", "expiring", "floor")

    def __init__(self, floor: str) -> None:
        self.floor = floor  # every holding slot with at > floor is here
        self.ats: list[str] = []  # permanent slots (expires_at IS NULL), sorted
        self.expiring: list[tuple[str, str]] = []  # reservations: (at, expires_at)

    def add(self, at: str, expires: str | None) -> None:
        if at <= self.floor:
            return
        if expires is not None:
            self.expiring.append((at, expires))
        elif not self.ats or at >= self.ats[-1]:
            self.ats.append(at)
        else:
            bisect.insort(self.ats, at)

    def advance(self, floor: str) -> None:
        self.floor = floor
        del self.ats[: bisect.bisect_right(self.ats, floor)]
        if self.expiring:
            self.expiring = [e for e in self.expiring if e[0] > floor]


class SqlTx:
    """One transaction. Methods are the storage vocabulary the engine composes."""

    def __init__(self, conn: Connection, prepared: dict[Any, _Prepared] | None = None,
                 counts: UsageCounts | None = None) -> None:  # fmt: skip
        self.conn = conn
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
        # Read once per transaction and kept current by this transaction's own writes: the
        # policy head, the number of kill switches, the chain tip. Safe because writers are
        # serialised, so nothing else moves them while a write transaction is open.
        self._policy_head: int | None = None
        self._kill_count: int | None = None
        self._chain: tuple[int, str] | None = None

    def _run(self, stmt: Any, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> Any:
        """Execute a hot-path statement (see :class:`_Prepared`); ``stmt`` is one of ``_HOT``
        or a usage lookup statement."""
        prepared = self._prepared.get(stmt)
        if prepared is None:
            prepared = _Prepared(stmt, self.conn.dialect, _HOT.get(stmt))
            if len(self._prepared) < 1024:  # lookup shapes are few; never grow without bound
                self._prepared[stmt] = prepared
        if self._sqlite is not None:
            return prepared.execute_sqlite(self._sqlite, params)
        return prepared.execute(self.conn, params)

    def _prelude(self, lookups: Sequence[tuple[Any, ...]] = (), now: datetime | None = None) -> list[Any]:
        """Read the policy head, kill switch count and chain tip, plus any usage lookups, in
        one statement; returns the lookups' raw values."""
        if lookups:
            r = self._run(_lookup_statement(True, tuple(x[0] for x in lookups)), _lookup_params(lookups, now)).first()  # type: ignore[arg-type]
        else:
            r = self._run(_PRELUDE).first()
        if r is None:  # no chain_head row (never after migration): ask each separately
            self._policy_head = int(self.conn.execute(_POLICY_HEAD).scalar_one())
            self._kill_count = None
            self._chain = (0, GENESIS)
            if lookups:
                return list(self._run(_lookup_statement(False, tuple(x[0] for x in lookups)), _lookup_params(lookups, now)).one())  # type: ignore[arg-type]
            return []
        self._policy_head, self._kill_count, self._chain = int(r[0]), int(r[1]), (int(r[2]), str(r[3]))
        return list(r[4:])

    def usage_lookups(self, lookups: Sequence[tuple[Any, ...]], now: datetime) -> list[Any]:
        """Answer several usage questions (see :func:`clearance.policy.usage_lookups`) in one
        round trip, folded into the transaction's first read when it has not happened yet."""
        if not lookups:
            if self._policy_head is None:
                self._prelude()
            return []
        counts = self._counts
        if counts is not None and self._policy_head is None and any(lk[0] == "count" for lk in lookups):
            return self._lookups_with_counts(counts, lookups, now)
        if self._policy_head is None:
            values = self._prelude(lookups, now)
        else:
            values = list(self._run(_lookup_statement(False, tuple(x[0] for x in lookups)), _lookup_params(lookups, now)).one())
        dialect = self.conn.dialect
        return [_usage_value(key[0], value, dialect) for key, value in zip(lookups, values)]

    def _lookups_with_counts(self, counts: UsageCounts, lookups: Sequence[tuple[Any, ...]], now: datetime) -> list[Any]:
        """As :meth:`usage_lookups`, with the counts from :class:`UsageCounts` when it holds
        the state this transaction sees (the chain tip the prelude reads), else from SQL."""
        others = [lk for lk in lookups if lk[0] != "count"]
        dialect = self.conn.dialect
        answers = {id(lk): _usage_value(lk[0], v, dialect) for lk, v in zip(others, self._prelude(others, now))}
        wanted = [lk for lk in lookups if lk[0] == "count"]
        if counts.tip is not None and counts.tip == self._chain:
            raw = self._sqlite
            assert raw is not None
            for lk in wanted:
                answers[id(lk)] = counts.count(raw, lk[1], lk[2], lk[3], now, lk[4])
        else:  # someone else wrote since (or nothing is known): count in SQL, keep counts from here on
            values = self._run(_lookup_statement(False, tuple(lk[0] for lk in wanted)), _lookup_params(wanted, now)).one()
            for lk, v in zip(wanted, values):
                answers[id(lk)] = _usage_value("count", v, dialect)
            counts.reset(self._chain)
        return [answers[id(lk)] for lk in lookups]

    # -- decisions ------------------------------------------------------------------------
    def insert_decision(self, row: dict[str, Any]) -> None:
        self._run(_INSERT_DECISION, row)

    def get_decision(self, request_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(_GET_DECISION, {"request_id": request_id}).mappings().first()
        return dict(r) if r else None

    def decisions_since(self, since: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q = select(t.decisions).order_by(t.decisions.c.decided_at).limit(limit)
        if since is not None:
            q = q.where(t.decisions.c.decided_at >= since)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    # -- usage (rate limits, budgets, cooldowns) ------------------------------------------
    def add_usage(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self._run(_INSERT_USAGE, [{"expires_at": None, **r, "active": True} for r in rows])
            counts = self._counts
            if counts is not None and counts.tip is not None:
                if counts.tip == self.chain_head():
                    counts.added(rows)
                else:
                    counts.reset()

    def keep_usage(self, request_id: str) -> None:
        """An approved call keeps its reserved slots for good."""
        self._drop_counts()
        self.conn.execute(update(t.usage).where(t.usage.c.request_id == request_id).values(expires_at=None))

    def release_usage(self, request_id: str) -> None:
        self._drop_counts()
        self.conn.execute(update(t.usage).where(t.usage.c.request_id == request_id).values(active=False))

    def _drop_counts(self) -> None:
        if self._counts is not None:
            self._counts.reset()

    def count(self, rule_id: str, actor: str, since: datetime, now: datetime, cap: int | None = None) -> int:
        """Calls holding a slot since ``since``; with ``cap``, counting stops there (a limit
        only needs to know whether it is reached, and this keeps busy actors cheap)."""
        params = {"rule_id": rule_id, "actor": actor, "since": since, "now": now}
        if cap is not None:
            return int(self.conn.execute(_COUNT_CAPPED, dict(params, cap=cap)).scalar_one())
        return int(self.conn.execute(_COUNT, params).scalar_one())

    def total_value(self, rule_id: str, actor: str, since: datetime, now: datetime) -> float:
        params = {"rule_id": rule_id, "actor": actor, "since": since, "now": now}
        return float(self.conn.execute(_TOTAL, params).scalar_one())

    def last_at(self, rule_id: str, actor: str, target: str | None, now: datetime) -> datetime | None:
        params = {"rule_id": rule_id, "actor": actor, "target": target or "", "now": now}
        value = self.conn.execute(_LAST, params).scalar_one()
        # Aggregates bypass the column type on SQLite; route the value through it.
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return t.UTCDateTime().process_result_value(value, self.conn.dialect)

    # -- approvals --------------------------------------------------------------------------
    def insert_approval(self, row: dict[str, Any]) -> None:
        self.conn.execute(_INSERT_APPROVAL, row)

    def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.approvals).where(t.approvals.c.approval_id == approval_id)).mappings().first()
        return dict(r) if r else None

    def approval_for_request(self, request_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.approvals).where(t.approvals.c.request_id == request_id)).mappings().first()
        return dict(r) if r else None

    def list_approvals(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        q = select(t.approvals).order_by(t.approvals.c.created_at, t.approvals.c.approval_id).limit(limit)
        if status is not None:
            q = q.where(t.approvals.c.status == status)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def pending_expired(self, now: datetime) -> list[dict[str, Any]]:
        a = t.approvals.c
        q = select(t.approvals).where(a.status == "pending", a.expires_at <= now)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def set_approval_status(self, approval_id: str, expected: str, values: dict[str, Any]) -> bool:
        """Compare-and-set, so that of two resolutions only one can move a pending approval."""
        a = t.approvals.c
        res = self.conn.execute(
            update(t.approvals).where(a.approval_id == approval_id, a.status == expected).values(**values)
        )
        return res.rowcount == 1

    def add_vote(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.approval_votes), row)

    def votes(self, approval_id: str) -> list[dict[str, Any]]:
        v = t.approval_votes.c
        q = select(t.approval_votes).where(v.approval_id == approval_id).order_by(v.at)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    # -- executions -------------------------------------------------------------------------
    def get_execution(self, request_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.executions).where(t.executions.c.request_id == request_id)).mappings().first()
        return dict(r) if r else None

    def put_execution(self, row: dict[str, Any]) -> None:
        row = dict(row, result_summary=row.get("result_summary"))
        if self.get_execution(row["request_id"]) is None:
            self.conn.execute(insert(t.executions), row)
        else:
            self.conn.execute(
                update(t.executions).where(t.executions.c.request_id == row["request_id"]).values(**row)
            )

    # -- outcomes ---------------------------------------------------------------------------
    def get_outcome(self, event_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.outcomes).where(t.outcomes.c.event_id == event_id)).mappings().first()
        return dict(r) if r else None

    def insert_outcome(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.outcomes), row)

    def outcomes_for(self, request_id: str) -> list[dict[str, Any]]:
        o = t.outcomes.c
        q = select(t.outcomes).where(o.request_id == request_id).order_by(o.recorded_at)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    # -- policy -----------------------------------------------------------------------------
    def policy_head(self) -> int:
        if self._policy_head is None:
            self._prelude()
        assert self._policy_head is not None
        return self._policy_head

    def get_policy(self, version: int) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.policies).where(t.policies.c.version == version)).mappings().first()
        return dict(r) if r else None

    def insert_policy(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(t.policies), row)
        self._policy_head = None

    def list_policies(self) -> list[dict[str, Any]]:
        q = select(t.policies.c.version, t.policies.c.digest, t.policies.c.applied_at, t.policies.c.applied_by)
        return [dict(r) for r in self.conn.execute(q.order_by(t.policies.c.version)).mappings()]

    # -- kill switches ----------------------------------------------------------------------
    def kill_switches(self) -> list[dict[str, Any]]:
        if self._policy_head is None:
            self._prelude()
        if self._kill_count == 0:  # the common case: no switch is on, no query needed
            return []
        return [dict(r) for r in self.conn.execute(_KILL_SWITCHES).mappings()]

    def set_kill_switch(self, row: dict[str, Any]) -> None:
        self.clear_kill_switch(row["scope"], row["value"])
        self.conn.execute(insert(t.kill_switches), row)
        self._kill_count = None

    def clear_kill_switch(self, scope: str, value: str) -> bool:
        k = t.kill_switches.c
        self._kill_count = None
        return self.conn.execute(delete(t.kill_switches).where(k.scope == scope, k.value == value)).rowcount > 0

    # -- suspended runs ---------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.runs).where(t.runs.c.run_id == run_id)).mappings().first()
        return dict(r) if r else None

    def put_run(self, row: dict[str, Any]) -> None:
        row = dict(row)
        if self.get_run(row["run_id"]) is None:
            self.conn.execute(insert(t.runs), row)
        else:
            values = {k: v for k, v in row.items() if k not in ("run_id", "created_at")}
            self.conn.execute(update(t.runs).where(t.runs.c.run_id == row["run_id"]).values(**values))

    def set_run_lease(self, run_id: str, leased_by: str | None, leased_until: datetime | None) -> None:
        self.conn.execute(
            update(t.runs).where(t.runs.c.run_id == run_id).values(leased_by=leased_by, leased_until=leased_until)
        )

    def run_approval(self, approval_id: str) -> dict[str, Any] | None:
        q = select(t.run_approvals).where(t.run_approvals.c.approval_id == approval_id)
        r = self.conn.execute(q).mappings().first()
        return dict(r) if r else None

    def add_run_approval(self, approval_id: str, run_id: str) -> None:
        if self.run_approval(approval_id) is None:
            self.conn.execute(insert(t.run_approvals), {"approval_id": approval_id, "run_id": run_id, "consumed_at": None})

    def consume_run_approval(self, approval_id: str, now: datetime) -> bool:
        ra = t.run_approvals.c
        res = self.conn.execute(
            update(t.run_approvals).where(ra.approval_id == approval_id, ra.consumed_at.is_(None)).values(consumed_at=now)
        )
        return res.rowcount == 1

    def event_after(self, seq: int) -> dict[str, Any] | None:
        r = self.conn.execute(select(t.events).where(t.events.c.seq == seq + 1)).mappings().first()
        return dict(r) if r else None

    # -- idempotency keys of the server ------------------------------------------------------
    def idempotent_answer(self, key_id: str, idem_key: str) -> tuple[str, str, int | None, str | None] | None:
        """``(fingerprint, state, status_code, body)`` kept for an ``Idempotency-Key``, or None."""
        r = self._run(_GET_IDEMPOTENT, {"key_id": key_id, "idem_key": idem_key}).first()
        return None if r is None else (r[0], r[1], r[2], r[3])

    def keep_idempotent_answer(self, key_id: str, idem_key: str, fingerprint: str, status: int, body: str,
                               now: datetime) -> None:  # fmt: skip
        self._run(_INSERT_IDEMPOTENT, {"key_id": key_id, "idem_key": idem_key, "fingerprint": fingerprint,
                                       "state": "done", "status_code": status, "body": body, "created_at": now})  # fmt: skip

    def prune_idempotent_answers(self, before: datetime) -> None:
        self.conn.execute(delete(t.idempotency_keys).where(_ik.created_at < before))

    # -- audit chain ------------------------------------------------------------------------
    def chain_head(self) -> tuple[int, str]:
        if self._chain is None:
            self._prelude()
        assert self._chain is not None
        return self._chain

    def append_event(self, row: dict[str, Any]) -> None:
        self.append_events([row])

    def append_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store consecutive events and move the chain head to the last of them."""
        if not rows:
            return
        self._run(_INSERT_EVENT, rows[0] if len(rows) == 1 else list(rows))
        last = rows[-1]
        self._run(_MOVE_HEAD, {"seq": last["seq"], "hash": last["hash"]})
        counts = self._counts
        if counts is not None and counts.tip is not None:
            if counts.tip == self.chain_head():
                counts.tip = (last["seq"], last["hash"])  # what it knows is still the whole truth
            else:
                counts.reset()
        self._chain = (last["seq"], last["hash"])

    def iter_events(self, batch: int = 1000) -> Iterator[dict[str, Any]]:
        last = 0
        while True:
            q = select(t.events).where(t.events.c.seq > last).order_by(t.events.c.seq).limit(batch)
            rows = [dict(r) for r in self.conn.execute(q).mappings()]
            if not rows:
                return
            yield from rows
            last = rows[-1]["seq"]

    def query_events(
        self,
        *,
        request_id: str | None = None,
        trace_id: str | None = None,
        type: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        e = t.events.c
        q = select(t.events).where(e.seq > after_seq).order_by(e.seq).limit(limit)
        if request_id is not None:
            q = q.where(e.request_id == request_id)
        if trace_id is not None:
            q = q.where(e.trace_id == trace_id)
        if type is not None:
            q = q.where(e.type == type)
        return [dict(r) for r in self.conn.execute(q).mappings()]


def _savepoint_sql(depth: int) -> tuple[str, str, str]:
    name = f"clearance_{depth}"
    return f"SAVEPOINT {name}", f"ROLLBACK TO SAVEPOINT {name}", f"RELEASE SAVEPOINT {name}"


_SAVEPOINTS = tuple(_savepoint_sql(depth) for depth in range(8))


class SqlStore:
    """Owns the database connection pool and hands out transactions."""

    def __init__(self, url: str, *, migrate: bool = True, echo: bool = False) -> None:
        self.url = url
        self._prepared: dict[Any, _Prepared] = {}  # hot statements compiled for this store's dialect
        self._checkpointer: Checkpointer | None = None
        self._writers: WriterQueue | None = None
        self._batch = threading.local()  # .conn: the connection of this thread's open batch
        self._savepoints = 0
        # Commits made without waiting for the disk (batch(sync=False)), and how many of them
        # are known durable; see sync().
        self._wal: str | None = None
        self._wal_mode: bool | None = None  # whether the file is in WAL mode (asked once)
        self._unsynced = self._synced = 0
        self._sync_lock = threading.Lock()
        self._kept: Connection | None = None  # see _deferring_connection()
        self._kept_pid = 0
        self._counts: UsageCounts | None = None  # SQLite only
        sa_url = make_url(url)
        self.dialect = sa_url.get_backend_name()
        if self.dialect == "sqlite":
            db = sa_url.database
            if db and db != ":memory:":
                Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            self.engine: SAEngine = create_engine(
                sa_url, echo=echo, connect_args={"timeout": 30}, pool_size=8, max_overflow=32,
                json_serializer=_json_dumps,
            )
            # A pool event only: no Connection events, which would put event dispatch on every
            # statement. Transactions are begun explicitly by read() and write().
            event.listen(self.engine, "connect", _sqlite_connect)
            self._counts = UsageCounts(_bind_processor(t.UTCDateTime(), self.engine.dialect))
            if db and db != ":memory:" and not sa_url.query.get("mode") == "memory":
                self._checkpointer = Checkpointer(str(Path(db).expanduser()))
                self._writers = WriterQueue(str(Path(db).expanduser()))
                self._wal = f"{Path(db).expanduser()}-wal"
        else:
            self.engine = create_engine(sa_url, echo=echo, pool_pre_ping=True, pool_size=8, max_overflow=16,
                                        json_serializer=_json_dumps)  # fmt: skip
        if migrate:
            from clearance.store.migrate import upgrade

            upgrade(self.engine)

    @classmethod
    def from_path(cls, path: str | Path, **kw: Any) -> SqlStore:
        return cls(f"sqlite:///{Path(path).expanduser()}", **kw)

    @contextmanager
    def read(self) -> Iterator[SqlTx]:
        """A read transaction over one consistent snapshot.

        SQLite gives that by itself; PostgreSQL's default READ COMMITTED would let each statement
        see newer commits, so that, for example, verifying the audit chain while others append
        would read the events, then a newer chain head, and report tampering that is not there.
        """
        if self._synced < self._unsynced:
            self.sync()  # never show this process's readers a commit that is not durable yet
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if self.dialect == "sqlite":
                    begin_sqlite(conn, immediate=False)
                yield SqlTx(conn, self._prepared)

    @contextmanager
    def write(self, *, sync: bool = True, blocking: bool = True) -> Iterator[SqlTx]:
        """A write transaction that holds the store's single writer lock until it ends.

        Inside :meth:`batch`, on the batch's thread, it is a savepoint of the batch's
        transaction instead: its writes are kept or undone on their own and become durable
        with the batch's commit.

        ``sync=False`` is for :meth:`batch` only (see there): on a SQLite file, the commit
        does not wait for the disk. ``blocking=False`` raises :class:`WouldBlock`, before
        anything is done, when another writer queued on this store holds it (an event loop
        must not wait for a lock)."""
        joined = self._batch.__dict__.get("conn")
        if joined is not None:
            with self._savepoint(joined):
                yield SqlTx(joined, self._prepared, self._counts)
            return
        deferred = not sync and self._wal is not None and self._wal_mode is not False
        queue = self._writers
        queued = queue is not None and queue.enter(blocking)
        try:
            # Commits that do not wait for the disk run on a connection kept for them, used only
            # while this process's writer queue is held (so by one thread at a time); without
            # the queue (it could not be opened) they wait for the disk like any other.
            kept = self._deferring_connection() if deferred and queued else None
            with nullcontext(kept) if kept is not None else self.engine.connect() as conn:
                try:
                    with conn.begin():
                        if self.dialect == "sqlite":
                            begin_sqlite(conn, immediate=True)
                        else:
                            conn.execute(_LOCK_HEAD)
                        yield SqlTx(conn, self._prepared, self._counts)
                    if kept is not None:
                        self._unsynced += 1  # under the writer lock: commits are counted in order
                except BaseException:
                    if self._counts is not None:  # rolled back (or not known to be committed)
                        self._counts.reset()
                    raise
        finally:
            if queued:
                queue.exit()  # type: ignore[union-attr]
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def _deferring_connection(self) -> Connection | None:
        """The connection whose commits do not wait for the disk (``synchronous=NORMAL``: in WAL
        mode a commit is then only written to the WAL, and :meth:`sync` fsyncs it), kept open
        across batches: taking one from the pool and setting it up each time cost a batch about
        as much as a decision. None when the file is not in WAL mode. Called with the writer
        queue held."""
        conn = self._kept
        if conn is not None:
            if self._kept_pid != os.getpid():  # a forked child: never the parent's connection
                self._kept = None
            elif not conn.invalidated and not conn.closed:
                return conn
            else:
                self._drop_kept()
        conn = self.engine.connect()
        try:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            if self._wal_mode is None:  # once: is the WAL what holds commits?
                self._wal_mode = str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
            if not self._wal_mode:
                conn.close()
                return None
            raw.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        self._kept, self._kept_pid = conn, os.getpid()
        return conn

    def _drop_kept(self) -> None:
        """Give the kept connection back to the pool, as every other connection is set: its
        commits wait for the disk again (or it is discarded)."""
        conn, self._kept = self._kept, None
        if conn is None or self._kept_pid != os.getpid():
            return
        try:
            if not conn.invalidated and not conn.closed:
                conn.connection.dbapi_connection.execute("PRAGMA synchronous=FULL")  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a broken connection is not put back
            conn.invalidate()
        conn.close()

    @property
    def defers_sync(self) -> bool:
        """Whether ``batch(sync=False)`` commits without waiting for the disk (a SQLite file)."""
        return self._wal is not None and self._wal_mode is not False

    @contextmanager
    def batch(self, *, sync: bool = True, blocking: bool = True) -> Iterator[SqlTx]:
        """One write transaction that the :meth:`write` calls of this thread join, each as a
        savepoint, until it commits: group commit. Operations inside stay sequential (each
        sees the writes of the ones before it, as after a commit), an operation that raises
        undoes only its own writes, and all of them become durable with one commit (one fsync
        on SQLite) when the block ends. Nobody may be told an outcome before that commit.

        With ``sync=False`` (on a SQLite file; elsewhere it changes nothing) the commit writes
        the batch to the WAL without waiting for the disk, so the next batch can be decided
        while this one is made durable: whoever runs the batch must then call :meth:`sync`,
        and tell nobody any outcome of the batch before it returns. Until then this process's
        own readers wait for it too (:meth:`read` syncs first). ``blocking`` as for :meth:`write`."""
        if self._batch.__dict__.get("conn") is not None:
            raise RuntimeError("batches do not nest")
        # The instance's write: a server may wrap it in its own lock.
        with self.write() if sync and blocking else self.write(sync=sync, blocking=blocking) as tx:
            self._batch.conn = tx.conn
            try:
                yield tx
            finally:
                self._batch.conn = None

    def sync(self) -> None:
        """Make every commit of ``batch(sync=False)`` before this call durable: one fsync of the
        WAL, which holds those commits in order (a commit's frames are written to it before the
        commit returns; anything a checkpoint copied out of it SQLite fsyncs in the database file
        before the WAL is reused). Concurrent callers share a fsync where they can; raises
        ``OSError`` when the fsync fails, and then nothing since the last success is known to
        be durable."""
        if self._wal is None:
            return
        with self._sync_lock:
            target = self._unsynced
            if self._synced >= target:
                return  # another caller's fsync, begun after those commits, covered them
            fd = os.open(self._wal, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced = target

    @contextmanager
    def _savepoint(self, conn: Connection) -> Iterator[None]:
        # Named by nesting depth, not numbered: the same few statements every time, so the
        # driver's statement cache prepares each once (a fresh name is parsed on every call).
        # A name used again inside itself is fine: SQLite and PostgreSQL both refer to the
        # innermost savepoint of that name.
        local = self._batch
        depth = local.__dict__.get("depth", 0) + 1
        local.depth = depth
        self._savepoints += 1
        begin, rollback, release = _SAVEPOINTS[depth] if depth < len(_SAVEPOINTS) else _savepoint_sql(depth)
        run = conn.connection.dbapi_connection.execute if self.dialect == "sqlite" else conn.exec_driver_sql  # type: ignore[union-attr]
        try:
            run(begin)
            try:
                yield
            except BaseException:
                if self._counts is not None:  # what it learnt inside is undone
                    self._counts.reset()
                run(rollback)
                run(release)
                raise
            run(release)
        finally:
            local.depth = depth - 1

    def note_commit(self) -> None:
        """Tell the WAL checkpointer about a commit made outside :meth:`write` (on SQLite)."""
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def close(self) -> None:
        if self._synced < self._unsynced:
            self.sync()
        self._drop_kept()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()


#: WAL pages after which a commit also checkpoints (copies the WAL into the database file and
#: fsyncs it). SQLite's default is 1000; a decision appends about 13 pages, so the default
#: would make one decision in ~75 pay a checkpoint (~1.5-4 ms here). At 4000, one in ~300
#: does, each checkpoint costs about twice as much (mostly the same two fsyncs), and the
#: checkpointing work per decision halves. The WAL file grows to about 16 MB instead of 4 MB.
#: With the :class:`Checkpointer` thread copying pages back meanwhile, such a commit only copies
#: the pages of its last few dozen predecessors (about 2.5 ms instead of 4-6).
WAL_AUTOCHECKPOINT_PAGES = 4000


class WriterQueue:
    """Lines up this store's SQLite writers before ``BEGIN IMMEDIATE``: threads on a lock, and
    processes on an ``flock`` of a file beside the database (``<db>-writer``).

    SQLite lets one writer in at a time; the others wait in its busy handler, which sleeps in
    growing steps (1, 2, 5, 10 ... 100 ms) and retries, so under contention a writer can sleep
    long after the lock was freed. Waiting here wakes a writer as soon as the previous one is
    done. The SQLite lock still decides: writers that do not queue here (other programs, older
    versions) are excluded by it as before, and only wait as before. A write nested in another
    of the same thread does not queue again.
    """

    def __init__(self, path: str) -> None:
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

    def exit(self) -> None:
        self._local.held = False
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


class Checkpointer:
    """Copies the WAL back into the database file from a thread of its own, so that decisions
    do not pay for it.

    Left to SQLite alone, the commit that takes the WAL past ``wal_autocheckpoint`` pages
    (:data:`WAL_AUTOCHECKPOINT_PAGES`) also checkpoints it: it copies every page of the WAL into
    the database file and fsyncs that file before ``evaluate`` returns (4-6 ms here, one
    decision in about 300). Here a thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own
    connection every :attr:`every` commits of this store, and once the store has been quiet for
    :attr:`idle` seconds. A passive checkpoint takes no lock that readers or writers wait for.
    SQLite's own automatic checkpoint stays on: it is what starts the WAL again from its
    beginning, and since this thread has already copied all but the last few commits, it only
    copies those (2-2.5 ms instead of 4-6). Durability is unchanged: a commit is durable once
    its WAL frames are fsynced (``synchronous=FULL``), and a checkpoint fsyncs the database file
    before any writer may reuse the WAL.

    (Holding this store's writers back for a last catch-up so that the WAL restarts without any
    writer checkpointing was measured too: it delays about 1% of decisions by a fsync, which is
    worse for the p99 than one decision in 300 paying 2.5 ms.)

    The safety valve, for when checkpoints cannot finish (readers holding old snapshots, writers
    in other processes): past :attr:`valve_frames` frames the thread runs ``RESTART``, which
    waits, at most :attr:`valve_timeout_ms`, for readers and writers so that the WAL can start
    again. Several stores on one file each run one thread; SQLite runs one checkpoint at a time
    and the others return at once.
    """

    every = 48  # commits between passive checkpoints (a decision appends about 13 pages)
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


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling is off: it would BEGIN only before the first write,
    # too late for reads to share the writer's snapshot. read() and write() begin explicitly.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    _enable_wal(cur)
    cur.execute("PRAGMA synchronous=FULL")  # a decision survives power loss once evaluate returns
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cur.execute("PRAGMA foreign_keys=ON")
    # A batch of decisions is one transaction of nested savepoints, and SQLite keeps the pages a
    # savepoint may have to roll back in a sub-journal, spilled past 64 KiB to a temporary file
    # that each batch created, wrote ~20 KB a decision to and deleted. Nothing in that file
    # outlives the transaction, so it is kept in memory (so are temporary sort tables: every
    # sorting query of the store is bounded by a LIMIT or small).
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _enable_wal(cur: sqlite3.Cursor, timeout: float = 30.0) -> None:
    """Switch a fresh file to WAL, waiting out other connections doing the same.

    The switch needs an exclusive lock, and when several connections open a new file at once
    SQLite answers "database is locked" at once instead of calling the busy handler (waiting
    could deadlock two readers that both want to write). Once one of them has switched, the
    mode is stored in the file and the pragma is a no-op for every later connection.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def begin_sqlite(conn: Connection, *, immediate: bool) -> None:
    """Open the SQLite transaction of ``conn`` (inside ``conn.begin()``): ``BEGIN IMMEDIATE``
    takes the database's writer lock at once, so a writer's reads are already serialised.

    Issued on the driver connection: pysqlite's ``do_begin`` does nothing, and a SQLAlchemy
    "begin" event listener would cost event dispatch on every later statement. The driver's
    commit and rollback, which SQLAlchemy calls, end the transaction.
    """
    sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    try:
        conn.connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]
    except sqlite3.Error as exc:  # e.g. "database is locked" after busy_timeout: as SQLAlchemy would raise it
        raise sa_exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
