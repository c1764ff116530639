"""The store's SQL vocabulary: statements built once, compiled once per dialect, and how their
values are bound (timestamps, JSON). Constructing Core expressions costs more than running them."""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, bindparam, cast, func, insert, literal, or_, select, update
from sqlalchemy.sql import ColumnElement, Select

from clearance.model import RawJSON
from clearance.store import schema as t

#: The hash before the audit chain's first event.
GENESIS = "0" * 64

_u = t.usage.c
_HOLDING = (_u.active.is_(True), or_(_u.expires_at.is_(None), _u.expires_at > bindparam("now")))
_USAGE_WINDOW = (_u.rule_id == bindparam("rule_id"), _u.actor == bindparam("actor"), _u.at > bindparam("since"), *_HOLDING)
COUNT_CAPPED = select(func.count()).select_from(select(literal(1)).where(*_USAGE_WINDOW).limit(bindparam("cap")).subquery())
COUNT = select(func.count()).where(*_USAGE_WINDOW)
TOTAL = select(func.coalesce(func.sum(_u.value), 0.0)).where(*_USAGE_WINDOW)
LAST = select(func.max(_u.at)).where(_u.rule_id == bindparam("rule_id"), _u.actor == bindparam("actor"),
                                     _u.target == bindparam("target"), *_HOLDING)  # fmt: skip
POLICY_HEAD = select(func.coalesce(func.max(t.policies.c.version), 0))
KILL_SWITCHES = select(t.kill_switches)
# What every write transaction needs first, in one round trip: the policy head, whether any kill
# switch is on, and the audit chain's tip.
PRELUDE = select(
    POLICY_HEAD.scalar_subquery(),
    select(func.count()).select_from(t.kill_switches).scalar_subquery(),
    t.chain_head.c.seq,
    t.chain_head.c.hash,
).where(t.chain_head.c.id == 1)
INSERT_DECISION = insert(t.decisions)
INSERT_USAGE = insert(t.usage)
INSERT_EVENT = insert(t.events)
INSERT_APPROVAL = insert(t.approvals)
MOVE_HEAD = update(t.chain_head).where(t.chain_head.c.id == 1)
GET_DECISION = select(t.decisions).where(t.decisions.c.request_id == bindparam("request_id"))
_ik = t.idempotency_keys.c
_d = t.decisions.c
#: A decision's JSON as the text it was stored as (the canonical text the audit chain hashed).
DECISION_TEXT = cast(_d.decision, Text)
#: Its arguments likewise (canonical JSON since revision 0008, which the decision.made event refers to).
ARGUMENTS_TEXT = cast(_d.arguments, Text)
GET_IDEMPOTENT = select(_ik.fingerprint, _ik.state, _ik.status_code, func.coalesce(_ik.body, DECISION_TEXT)).select_from(
    t.idempotency_keys.outerjoin(t.decisions, _d.request_id == _ik.request_id)).where(
    _ik.key_id == bindparam("key_id"), _ik.idem_key == bindparam("idem_key"))  # fmt: skip
INSERT_IDEMPOTENT = insert(t.idempotency_keys)
_ap = t.approvals.c
#: Approvals of calls with one arguments hash that may still run (the MCP gateway asks on each call).
OPEN_APPROVALS = select(t.approvals).where(
    _ap.status.in_(("pending", "approved")), _ap.expires_at > bindparam("now", type_=t.UTCDateTime()),
    _ap.args_hash == bindparam("args_hash")).order_by(_ap.created_at.desc()).limit(20)  # fmt: skip

#: statement -> the column keys its INSERT or UPDATE is compiled for (None: a SELECT).
HOT: dict[Any, tuple[str, ...] | None] = {
    INSERT_DECISION: tuple(c.name for c in t.decisions.columns),
    INSERT_USAGE: ("request_id", "rule_id", "actor", "target", "value", "at", "active", "expires_at"),
    INSERT_EVENT: ("seq", "event_id", "trace_id", "request_id", "type", "created_at", "body", "prev_hash", "hash",
                   "decision_at", "arguments_at", "source_version"),
    MOVE_HEAD: ("seq", "hash"), PRELUDE: None, GET_IDEMPOTENT: None,
    INSERT_IDEMPOTENT: ("key_id", "idem_key", "fingerprint", "state", "status_code", "body", "created_at", "request_id"),
}  # fmt: skip

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


def lookup_statement(prelude: bool, kinds: tuple[str, ...]) -> Select[Any]:
    stmt = _LOOKUP_STATEMENTS.get((prelude, kinds))
    if stmt is None:
        columns = [_lookup_column(kind, i) for i, kind in enumerate(kinds)]
        stmt = PRELUDE.add_columns(*columns) if prelude else select(*columns)
        if len(_LOOKUP_STATEMENTS) < 512:  # shapes are combinations of a rule set's limits: few
            _LOOKUP_STATEMENTS[(prelude, kinds)] = stmt
    return stmt


def lookup_params(lookups: Sequence[tuple[Any, ...]], now: datetime) -> dict[str, Any]:
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


def usage_value(kind: str, value: Any, dialect: Any) -> Any:
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


def bind_processor(type_: Any, dialect: Any) -> Any:
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


class Prepared:
    """A hot-path Core statement, compiled once per dialect and run through
    ``Connection.exec_driver_sql`` (or on SQLite's driver connection: :func:`sqlite.run`).

    ``Connection.execute`` redoes on every call what never changes for a statement built once:
    the compiled-cache lookup, matching parameters to binds, choosing each bind's processor.
    Here each call only applies the bind processors and hands the dialect's SQL to the driver,
    in the same transaction, with SQLAlchemy's error handling. Rows come back as DBAPI values:
    callers read plain numbers and strings, or convert (see ``usage_value``).
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
        processors = [bind_processor(b.type, dialect) for b in by_name.values()]
        self.processed = tuple((i, proc) for i, proc in enumerate(processors) if proc is not None)
        # Positional SQL may name one bind several times (``now``): processed once, placed twice.
        self.order = tuple(self.names.index(n) for n in compiled.positiontup) if self.positional else ()

    def values(self, params: dict[str, Any]) -> Any:
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
            return conn.exec_driver_sql(self.sql, self.values(params or {}))
        return conn.exec_driver_sql(self.sql, [self.values(p) for p in params])


_JSON = json.JSONEncoder(default=str, ensure_ascii=False)  # json.dumps(value, default=str, ensure_ascii=False)


def json_dumps(value: Any) -> str:
    """JSON columns take only what json can write; anything else is stored as its text.
    :class:`RawJSON` is JSON already and is stored as it is."""
    if type(value) is RawJSON:
        return str(value)
    return _JSON.encode(value)
