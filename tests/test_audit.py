"""The audit trail: every operation leaves its event, and any tampering with the file shows up
in ``verify`` at the first event that no longer holds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cli_support
from audit_support import forge_decision_and_rehash
import pytest

from clearance import Engine, __version__, parse_rules
from clearance.engine import audit
from clearance.model import Event

T0 = datetime(2025, 6, 1, 9, 30, tzinfo=timezone.utc)

RULES = """
version: 1
rules:
  - id: refunds
    tool: refund
    require_approval_above: 100
    approval_ttl: 2h
  - id: two-person
    tool: wire
    effect: require_approval
    approvals_required: 2
"""

ALL_TYPES = {
    "rules.applied", "decision.made", "approval.requested", "approval.voted", "approval.resolved",
    "approval.expired", "execution.claimed", "execution.recorded", "outcome.reported",
    "kill_switch.activated", "kill_switch.deactivated",
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def build_trail(db: Path) -> dict[str, Any]:
    """One of every operation; returns the ids involved."""
    clock = Clock()
    with Engine(db, clock=clock) as eng:
        eng.apply_rules(parse_rules(RULES), applied_by="admin")
        clock.now += timedelta(seconds=1)
        ok = eng.evaluate({"tool": "refund", "actor": "bot", "value": 20, "arguments": {"order": 1}, "trace_id": "trace-ok"})
        eng.claim_execution(ok.request_id, claimant="worker")
        eng.record_execution(ok.request_id, "executed", {"refund_id": "r-1"})
        eng.report_outcome(ok.request_id, "succeeded", reported_by="shop", event_id="shop-1")
        held = eng.evaluate({"tool": "refund", "actor": "bot", "value": 500, "arguments": {"order": 2}})
        eng.resolve_approval(held.approval_id, "approved", approver="alice", comment="loyal customer")
        wire = eng.evaluate({"tool": "wire", "actor": "bot", "arguments": {"iban": "DE00"}})
        eng.resolve_approval(wire.approval_id, "approved", approver="alice")
        late = eng.evaluate({"tool": "refund", "actor": "bot", "value": 900, "arguments": {"order": 3}})
        clock.now += timedelta(hours=3)
        assert [a.approval_id for a in eng.expire_approvals()] == [late.approval_id]
        eng.activate_kill_switch(tool="refund", reason="fraud wave", by="oncall")
        eng.deactivate_kill_switch(tool="refund", by="oncall")
        events = eng.audit_events(limit=1000)
    return {"ok": ok, "held": held, "wire": wire, "late": late, "events": events}


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    db = tmp_path / "clearance.db"
    return db, build_trail(db)


def by_type(events: list[Event], type: str) -> list[Event]:
    return [e for e in events if e.type == type]


def test_every_operation_leaves_its_event(trail: tuple[Path, dict[str, Any]]) -> None:
    _, t = trail
    events: list[Event] = t["events"]
    assert {e.type for e in events} == ALL_TYPES
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.event_id.startswith("evt_") for e in events)
    assert all(e.schema_version == audit.SCHEMA_VERSION == 1 for e in events)
    assert all(e.source_version == f"clearance@{__version__}" for e in events)
    # Each event chains to the one before it.
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:]))

    ok, held, wire, late = t["ok"], t["held"], t["wire"], t["late"]
    (applied,) = by_type(events, "rules.applied")
    assert applied.payload["policy_version"] == "1" and applied.payload["applied_by"] == "admin"
    assert applied.payload["added"] == ["refunds", "two-person"]

    made = by_type(events, "decision.made")
    assert [e.request_id for e in made] == [ok.request_id, held.request_id, wire.request_id, late.request_id]
    assert made[0].trace_id == "trace-ok" and made[0].payload["decision"]["result"] == "allowed"
    assert made[0].payload["action"]["arguments"] == {"order": 1}

    requested = by_type(events, "approval.requested")
    assert [e.payload["approval_id"] for e in requested] == [held.approval_id, wire.approval_id, late.approval_id]
    (voted,) = by_type(events, "approval.voted")
    assert voted.request_id == wire.request_id and voted.payload["approvals_required"] == 2
    (resolved,) = by_type(events, "approval.resolved")
    assert resolved.request_id == held.request_id and resolved.trace_id == held.trace_id
    assert resolved.payload == {"approval_id": held.approval_id, "resolution": "approved", "approver": "alice",
                                "comment": "loyal customer", "policy_version": "1"}  # fmt: skip
    (expired,) = by_type(events, "approval.expired")
    assert expired.request_id == late.request_id and expired.created_at == T0 + timedelta(hours=3, seconds=1)

    (claimed,) = by_type(events, "execution.claimed")
    (recorded,) = by_type(events, "execution.recorded")
    (reported,) = by_type(events, "outcome.reported")
    for e in (claimed, recorded, reported):
        assert e.request_id == ok.request_id and e.trace_id == "trace-ok"
    assert claimed.payload["claimed_by"] == "worker"
    assert recorded.payload["status"] == "executed" and recorded.payload["result_summary"] == {"refund_id": "r-1"}
    assert reported.payload["event_id"] == "shop-1" and reported.payload["status"] == "succeeded"

    (on,) = by_type(events, "kill_switch.activated")
    (off,) = by_type(events, "kill_switch.deactivated")
    assert on.payload["scope"] == "tool" and on.payload["value"] == "refund" and on.payload["reason"] == "fraud wave"
    assert off.payload == {"scope": "tool", "value": "refund", "by": "oncall"}
    assert on.request_id is None and off.request_id is None


def test_audit_event_filters(trail: tuple[Path, dict[str, Any]]) -> None:
    db, t = trail
    with Engine(db) as eng:
        ok = t["ok"]
        assert [e.type for e in eng.audit_events(request_id=ok.request_id)] == [
            "decision.made", "execution.claimed", "execution.recorded", "outcome.reported"]  # fmt: skip
        assert [e.request_id for e in eng.audit_events(trace_id="trace-ok", type="execution.claimed")] == [ok.request_id]
        assert [e.seq for e in eng.audit_events(after_seq=3, limit=2)] == [4, 5]


def test_verify_ok_on_an_untouched_trail(trail: tuple[Path, dict[str, Any]]) -> None:
    db, t = trail
    with Engine(db) as eng:
        report = eng.verify_audit()
    assert report.ok and report.events_checked == len(t["events"])
    assert report.first_broken_seq is None and report.problem is None
    # 4 decisions, 3 approvals, 1 execution, 1 outcome and 1 policy agree with the chain; no checkpoint is kept.
    assert report.as_dict() == {"ok": True, "events_checked": len(t["events"]), "first_broken_seq": None, "problem": None,
                                "problems": [], "problems_total": 0, "rows_checked": 10, "checkpoints_checked": 0,
                                "anchored_seq": None}  # fmt: skip


def test_verify_ok_on_an_empty_store(tmp_path: Path) -> None:
    with Engine(tmp_path / "empty.db") as eng:
        assert eng.verify_audit().ok and eng.verify_audit().events_checked == 0


# -- tampering ------------------------------------------------------------------------------------
# Each tamper edits the file with plain sqlite3, as someone with access to it could, and returns
# the seq verify must name as the first broken event.
Tamper = Callable[[sqlite3.Connection, dict[str, Any]], int]


def seq_of(t: dict[str, Any], type: str) -> int:
    return by_type(t["events"], type)[0].seq


def last(t: dict[str, Any]) -> int:
    return t["events"][-1].seq


def edit_body(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    seq = seq_of(t, "approval.resolved")
    (body,) = conn.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
    assert '"approver":"alice"' in body
    conn.execute("UPDATE events SET body = ? WHERE seq = ?", (body.replace('"approver":"alice"', '"approver":"eve"'), seq))
    return seq


def edit_body_and_rehash(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    """A forger who knows the hash function fixes the edited row; the next link still breaks."""
    seq = seq_of(t, "decision.made")
    forge_decision_and_rehash(conn, seq)
    return seq + 1


def edit_decision_row(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    """The decision's JSON is kept once, in its decisions row: the chain covers it there."""
    seq = seq_of(t, "decision.made")
    (rid,) = conn.execute("SELECT request_id FROM events WHERE seq = ?", (seq,)).fetchone()
    conn.execute("UPDATE decisions SET decision = replace(decision, '\"result\":\"allowed\"', '\"result\":\"blocked\"') "
                 "WHERE request_id = ?", (rid,))  # fmt: skip
    return seq


def edit_arguments_row(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    """The arguments are kept once too, in the decisions row: the chain covers them there."""
    seq = seq_of(t, "decision.made")
    (rid,) = conn.execute("SELECT request_id FROM events WHERE seq = ?", (seq,)).fetchone()
    (arguments,) = conn.execute("SELECT arguments FROM decisions WHERE request_id = ?", (rid,)).fetchone()
    assert arguments.startswith("{") and arguments != "{}"
    conn.execute("UPDATE decisions SET arguments = ? WHERE request_id = ?", (arguments.replace("}", ',"x":1}', 1), rid))
    return seq


def edit_type(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    seq = seq_of(t, "approval.expired")
    conn.execute("UPDATE events SET type = 'approval.resolved' WHERE seq = ?", (seq,))
    return seq


def edit_request_id(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    seq = seq_of(t, "execution.claimed")
    conn.execute("UPDATE events SET request_id = 'req_other' WHERE seq = ?", (seq,))
    return seq


def edit_created_at(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    seq = seq_of(t, "outcome.reported")
    conn.execute("UPDATE events SET created_at = '2020-01-01 00:00:00.000000' WHERE seq = ?", (seq,))
    return seq


def edit_hash(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    seq = seq_of(t, "approval.requested")
    conn.execute("UPDATE events SET hash = ? WHERE seq = ?", ("f" * 64, seq))
    return seq


def delete_middle(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    seq = seq_of(t, "execution.recorded")
    conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    return seq


def delete_newest(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    conn.execute("DELETE FROM events WHERE seq = ?", (last(t),))
    return last(t)


def delete_two_newest(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    conn.execute("DELETE FROM events WHERE seq >= ?", (last(t) - 1,))
    return last(t) - 1


def delete_all(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    conn.execute("DELETE FROM events")
    return 1


def swap_rows(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    a = seq_of(t, "approval.resolved")
    conn.execute("UPDATE events SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE events SET seq = ? WHERE seq = ?", (a, a + 1))
    conn.execute("UPDATE events SET seq = ? WHERE seq = -1", (a + 1,))
    return a


def swap_contents(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    """Swap everything but the seq column, so the order of seq values still looks right."""
    a = seq_of(t, "decision.made") + 1
    cols = "event_id, trace_id, request_id, type, created_at, body, prev_hash, hash"
    ra = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (a,)).fetchone()  # noqa: S608
    rb = conn.execute(f"SELECT {cols} FROM events WHERE seq = ?", (a + 1,)).fetchone()  # noqa: S608
    conn.execute("UPDATE events SET event_id = event_id || '-tmp' WHERE seq IN (?, ?)", (a, a + 1))
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE events SET {sets} WHERE seq = ?", (*rb, a))  # noqa: S608
    conn.execute(f"UPDATE events SET {sets} WHERE seq = ?", (*ra, a + 1))  # noqa: S608
    return a


def replace_newest_with_forgery(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    """A validly chained newest event that the chain head never recorded."""
    n = last(t)
    body, prev = conn.execute("SELECT body, prev_hash FROM events WHERE seq = ?", (n,)).fetchone()
    body = body.replace('"by":"oncall"', '"by":"nobody"')
    conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = ?", (body, audit.link_hash(prev, body), n))
    return n


def append_forgery(conn: sqlite3.Connection, t: dict[str, Any]) -> int:
    """An extra event, correctly linked to the real newest one, inserted behind clearance's back."""
    n = last(t)
    (prev,) = conn.execute("SELECT hash FROM events WHERE seq = ?", (n,)).fetchone()
    fields = {"event_id": "evt_forged", "seq": n + 1, "trace_id": None, "request_id": None, "type": "rules.applied",
              "schema_version": 1, "source_version": "clearance@0", "created_at": T0.isoformat(), "payload": {}}  # fmt: skip
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    conn.execute(
        "INSERT INTO events (seq, event_id, trace_id, request_id, type, created_at, body, prev_hash, hash) "
        "VALUES (?, 'evt_forged', NULL, NULL, 'rules.applied', ?, ?, ?, ?)",
        (n + 1, T0.replace(tzinfo=None).isoformat(sep=" "), body, prev, audit.link_hash(prev, body)),
    )
    return n + 1


TAMPERS = [edit_body, edit_body_and_rehash, edit_decision_row, edit_arguments_row, edit_type, edit_request_id, edit_created_at, edit_hash, delete_middle,
           delete_newest, delete_two_newest, delete_all, swap_rows, swap_contents, replace_newest_with_forgery,
           append_forgery]  # fmt: skip


@pytest.mark.parametrize("tamper", TAMPERS, ids=[f.__name__ for f in TAMPERS])
def test_tampering_is_detected(trail: tuple[Path, dict[str, Any]], tamper: Tamper) -> None:
    db, t = trail
    with sqlite3.connect(db) as conn:
        expected = tamper(conn, t)
    conn.close()
    with Engine(db) as eng:
        report = eng.verify_audit()
    assert not report.ok, report
    assert report.first_broken_seq == expected, report
    assert report.problem and str(expected) in report.problem
    assert report.events_checked <= len(t["events"]) + 1


def test_appending_after_tampering_does_not_hide_it(trail: tuple[Path, dict[str, Any]]) -> None:
    db, t = trail
    with sqlite3.connect(db) as conn:
        expected = edit_body(conn, t)
    conn.close()
    with Engine(db) as eng:
        eng.evaluate({"tool": "refund", "actor": "bot", "value": 1})
        report = eng.verify_audit()
    assert not report.ok and report.first_broken_seq == expected


# -- the CLI ---------------------------------------------------------------------------------------
def _cli_available() -> bool:
    try:
        from clearance.cli import main  # noqa: F401
    except ImportError:
        return False
    return True


def run_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli_support.run_cli(["--db", str(db), *args], timeout=120)


def test_cli_audit_verify(trail: tuple[Path, dict[str, Any]]) -> None:
    if not _cli_available():
        pytest.skip("clearance.cli is not importable yet")
    db, t = trail
    good = run_cli(db, "audit", "verify")
    assert good.returncode == 0, good.stderr
    with sqlite3.connect(db) as conn:
        expected = delete_middle(conn, t)
    conn.close()
    bad = run_cli(db, "audit", "verify")
    assert bad.returncode != 0
    assert str(expected) in bad.stdout + bad.stderr
    as_json = run_cli(db, "audit", "verify", "--json")
    assert as_json.returncode != 0
    assert json.loads(as_json.stdout)["first_broken_seq"] == expected


# -- the canonical body, assembled ------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [{}, {"b": 1, "a": [1, 2, {"z": None, "y": "ü"}]}, {"text": 'quote " and \\ backslash', "n": 1.5e300, "t": True}],
)
@pytest.mark.parametrize("request_id, trace_id", [(None, None), ("req_1", "trace é")])
def test_event_body_is_canonical_json_of_the_fields(payload: dict[str, Any], request_id: str | None, trace_id: str | None) -> None:
    from clearance.model import RawJSON, canonical_json

    fields = {"event_id": "evt_1", "seq": 7, "trace_id": trace_id, "request_id": request_id, "type": "x.y",
              "schema_version": audit.SCHEMA_VERSION, "source_version": audit.SOURCE_VERSION,
              "created_at": T0.isoformat(), "payload": payload}  # fmt: skip
    expected = canonical_json(fields)
    kw = {k: v for k, v in fields.items() if k not in ("schema_version", "source_version")}
    assert audit.event_body(**kw) == expected
    assert audit.event_body(**{**kw, "payload": RawJSON(canonical_json(payload))}) == expected


def test_a_decision_event_body_is_canonical(tmp_path: Path) -> None:
    from clearance.model import canonical_json

    with Engine(tmp_path / "c.db") as eng:
        eng.apply_rules(parse_rules(RULES))
        eng.evaluate({"tool": "refund", "actor": "bot", "value": 500, "arguments": {"z": 1, "a": {"é": [1.5, None]}},
                      "context": {"k": "v"}, "target": "order-1"})  # fmt: skip
        with eng.store.read() as tx:
            stored = list(tx.iter_events())
            decision_row = tx.get_decision(stored[1]["request_id"])
        assert [r["type"] for r in stored] == ["rules.applied", "decision.made", "approval.requested"]
        for row in stored:
            assert canonical_json(json.loads(row["body"])) == row["body"]
        body = json.loads(stored[1]["body"])
        assert body["payload"]["decision"] == decision_row["decision"]
        assert body["payload"]["action"]["arguments"] == {"z": 1, "a": {"é": [1.5, None]}}
        assert eng.verify_audit().ok
