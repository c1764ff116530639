"""The audit trail as a hash chain.

Each event's hash covers its canonical body and the previous event's hash, and the chain's head
is kept beside it; so any edited, removed or reordered row, including the newest, shows up
in :func:`verify` as the first link that no longer holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clearance.model import Event, RawJSON, new_id
from clearance.store import GENESIS, SqlTx
from clearance.store.envelope import SCHEMA_VERSION, SOURCE_VERSION, event_body

__all__ = ["SCHEMA_VERSION", "SOURCE_VERSION", "append", "append_all", "event_body", "intact", "latest", "link_hash",
           "to_event", "verify"]  # fmt: skip


def link_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def append(
    tx: SqlTx,
    type: str,
    payload: dict[str, Any] | RawJSON,
    *,
    now: datetime,
    request_id: str | None = None,
    trace_id: str | None = None,
) -> str:
    """Append one event and return its id. The body is serialised once, canonically."""
    return append_all(tx, [(type, payload)], now=now, request_id=request_id, trace_id=trace_id)[0]


def append_all(
    tx: SqlTx,
    events: Sequence[tuple[str, dict[str, Any] | RawJSON]],
    *,
    now: datetime,
    request_id: str | None = None,
    trace_id: str | None = None,
    rows_out: list[dict[str, Any]] | None = None,
    decision_text: str | None = None,
    arguments_text: str | None = None,
) -> list[str]:
    """Append consecutive events of one request (``(type, payload)`` pairs) in one write.

    ``decision_text``: the first event holds this decision's JSON, which its decisions row
    keeps; the store then keeps the event without it (the lean store) and puts it back on read.
    ``arguments_text``: likewise the action's arguments (canonical JSON), kept in that row too.

    A payload may be :class:`RawJSON` holding its own :func:`canonical_json` text, so that a
    value already serialised for another column is not serialised again. ``rows_out``
    collects the stored rows, for callers that hand them on (to memory) without reading back.
    """
    seq, prev = tx.chain_head()
    created = now.isoformat()
    rows, ids = [], []
    for type_, payload in events:
        seq += 1
        event_id = new_id("evt")
        body = event_body(event_id=event_id, seq=seq, trace_id=trace_id, request_id=request_id, type=type_,
                          created_at=created, payload=payload)  # fmt: skip
        digest = link_hash(prev, body)
        rows.append({"seq": seq, "event_id": event_id, "trace_id": trace_id, "request_id": request_id, "type": type_,
                     "created_at": now, "body": body, "prev_hash": prev, "hash": digest})  # fmt: skip
        ids.append(event_id)
        prev = digest
    if decision_text is not None and rows:
        rows[0]["decision_text"] = decision_text
        rows[0]["arguments_text"] = arguments_text
    tx.append_events(rows)
    if rows_out is not None:
        rows_out.extend(rows)
    return ids


def to_event(row: dict[str, Any]) -> Event:
    body = json.loads(row["body"])
    return Event(**{**body, "created_at": datetime.fromisoformat(body["created_at"])}, prev_hash=row["prev_hash"], hash=row["hash"])


@dataclass(frozen=True)
class AuditReport:
    """What verification found. ``problem`` is the first thing wrong (``first_broken_seq`` the
    event where it shows, when one does); ``problems`` lists the first few of everything wrong,
    ``problems_total`` counts them all. ``rows_checked`` counts the state-table rows compared
    with the chain, ``checkpoints_checked`` the signed checkpoints kept in the store, and
    ``anchored_seq`` is the head an anchor (a checkpoint kept outside the store) vouched for."""

    ok: bool
    events_checked: int
    first_broken_seq: int | None = None
    problem: str | None = None
    problems: list[str] = field(default_factory=list)
    problems_total: int = 0
    rows_checked: int = 0
    checkpoints_checked: int = 0
    anchored_seq: int | None = None

    def __post_init__(self) -> None:
        if self.problem is not None and not self.problems:
            object.__setattr__(self, "problems", [self.problem])
        if self.problems_total < len(self.problems):
            object.__setattr__(self, "problems_total", len(self.problems))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events_checked": self.events_checked, "first_broken_seq": self.first_broken_seq,
                "problem": self.problem, "problems": list(self.problems), "problems_total": self.problems_total,
                "rows_checked": self.rows_checked, "checkpoints_checked": self.checkpoints_checked,
                "anchored_seq": self.anchored_seq}  # fmt: skip


_PROJECTED = ("event_id", "seq", "trace_id", "request_id", "type")


def _same_time(text: Any, value: datetime | None) -> bool:
    try:
        return isinstance(text, str) and value is not None and datetime.fromisoformat(text) == value
    except ValueError:
        return False


def verify(tx: SqlTx, *, on_event: Callable[[dict[str, Any], dict[str, Any]], None] | None = None) -> AuditReport:
    """Every stored event links to the one before, from the genesis or from the chain's cut
    (``clearance store prune``: the last archived event's seq and hash), up to the head.
    ``on_event`` sees each event that holds (its row and parsed body), in order, so other
    checks ride on this one reading."""
    cut = tx.chain_cut()
    prev, expected_seq, checked = (GENESIS, 1, 0) if cut is None else (cut[1], cut[0] + 1, 0)
    for row in tx.iter_events():
        seq = row["seq"]
        if seq != expected_seq:
            return AuditReport(False, checked, expected_seq, f"event {expected_seq} is missing (next stored is {seq})")
        if row["prev_hash"] != prev:
            return AuditReport(False, checked, seq, f"event {seq} does not link to event {seq - 1}")
        body, problem = _own_problem(row)
        if problem is not None:
            return AuditReport(False, checked, seq, problem)
        if on_event is not None:
            on_event(row, body)
        prev, expected_seq, checked = row["hash"], seq + 1, checked + 1
    head_seq, head_hash = tx.chain_head()
    last = expected_seq - 1  # the last event checked (the cut's, when none is kept after it)
    if head_seq > last:
        return AuditReport(False, checked, last + 1, f"event {last + 1} onwards are missing: the chain head "
                           f"records {head_seq} events but the chain stops at {last}, so the newest were removed")  # fmt: skip
    if head_seq < last:
        return AuditReport(False, checked, head_seq + 1, f"the chain head records {head_seq} events but {last} "
                           f"are stored: event {head_seq + 1} onwards were added outside clearance")  # fmt: skip
    if head_hash != prev:
        return AuditReport(False, checked, max(last, 1), f"event {last} does not match the chain head: "
                           "the newest event was altered or replaced")  # fmt: skip
    return AuditReport(True, checked)


def _own_problem(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``(body, problem)``: what is wrong with one stored event on its own (its hash against its
    body and link, its columns against its body), or None, with the parsed body."""
    seq = row["seq"]
    if link_hash(row["prev_hash"], row["body"]) != row["hash"]:
        return {}, f"event {seq} was altered: its hash does not match its contents"
    try:
        body = json.loads(row["body"])
    except ValueError:
        return {}, f"event {seq} has an unreadable body"
    for name in _PROJECTED:
        if body.get(name) != row[name]:
            return body, f"event {seq} was altered: column {name} disagrees with its body"
    if not _same_time(body.get("created_at"), row["created_at"]):
        return body, f"event {seq} was altered: column created_at disagrees with its body"
    return body, None


def check_events(tx: SqlTx, rows: Sequence[dict[str, Any]]) -> AuditReport:
    """Whether each of these stored events (one request's, say) still holds its place in the
    chain: its own hash and columns hold, the event before it links to it and it to the one
    after (or to the head). Costs a few reads an event, so a view of one decision need not walk
    the whole chain; :func:`verify` remains the proof of the whole."""
    problems: list[str] = []
    first: int | None = None
    cut = tx.chain_cut()
    head_seq, head_hash = tx.chain_head()
    for row in sorted(rows, key=lambda r: r["seq"]):
        seq = row["seq"]
        _, problem = _own_problem(row)
        if problem is None:
            if seq == 1 or (cut is not None and seq == cut[0] + 1):
                before = GENESIS if seq == 1 else cut[1]  # type: ignore[index]
            else:
                earlier = tx.event_at(seq - 1)
                before = None if earlier is None else earlier["hash"]
            if before is None:
                problem = f"event {seq - 1} is missing"
            elif row["prev_hash"] != before:
                problem = f"event {seq} does not link to event {seq - 1}"
        if problem is None:
            later = tx.event_after(seq) if seq < head_seq else None
            after = head_hash if seq == head_seq else (None if later is None else later["prev_hash"])
            if seq > head_seq:
                problem = f"event {seq} was added outside clearance: the chain head records {head_seq} events"
            elif after is None:
                problem = f"event {seq + 1} is missing"
            elif after != row["hash"]:
                problem = (f"event {seq} does not match the chain head: it was altered or replaced" if seq == head_seq
                           else f"event {seq + 1} does not link to event {seq}")  # fmt: skip
        if problem is not None:
            first = seq if first is None else first
            problems.append(problem)
    return AuditReport(not problems, len(rows), first, problems[0] if problems else None, problems[:20], len(problems))


def intact(tx: SqlTx, row: dict[str, Any]) -> bool:
    """Whether one stored event still holds its place in the chain (its own hash and the next link)."""
    if link_hash(row["prev_hash"], row["body"]) != row["hash"]:
        return False
    nxt = tx.event_after(row["seq"])
    return (nxt["prev_hash"] if nxt else tx.chain_head()[1]) == row["hash"]


def latest(tx: SqlTx, *, type: str, request_id: str | None = None, trace_id: str | None = None,
           match: dict[str, Any]) -> dict[str, Any] | None:  # fmt: skip
    """The newest event of ``type`` whose payload has every key/value of ``match``."""
    found, after = None, 0
    while batch := tx.query_events(request_id=request_id, trace_id=trace_id, type=type, after_seq=after, limit=100):
        for row in batch:
            payload = json.loads(row["body"]).get("payload", {})
            if all(payload.get(k) == v for k, v in match.items()):
                found = row
        after = batch[-1]["seq"]
    return found
