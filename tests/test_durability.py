"""State survives the process: what one process writes, another reads from the same file.

The writer is a separate Python process that ends abruptly (``os._exit``, no close, no
cleanup), so nothing can linger in memory: a rate-limit count and a pending approval must
already be on disk once ``evaluate`` has returned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from clearance import Engine, parse_rules
from clearance.model import ApprovalStatus, DecisionResult

RULES = """
version: 1
rules:
  - id: email-rate
    tool: send_email
    max_per_hour: 3
  - id: refunds
    domain: payments
    tool: refund
    require_approval_above: 100
"""

PRELUDE = f"""
import json, os, sys
from clearance import Engine, parse_rules
db = sys.argv[1]
RULES = {RULES!r}
"""


def run_child(script: str, db: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + script, str(db)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def email(actor: str = "agent-1") -> dict[str, Any]:
    return {"tool": "send_email", "actor": actor, "arguments": {"to": "a@example.com"}}


def refund(amount: float) -> dict[str, Any]:
    return {"tool": "refund", "domain": "payments", "actor": "agent-1", "value": amount, "arguments": {"amount": amount}}


def test_child_writes_parent_reads(tmp_path: Path) -> None:
    db = tmp_path / "clearance.db"
    out = run_child(
        """
eng = Engine(db)
eng.apply_rules(parse_rules(RULES))
sent = [eng.evaluate({"tool": "send_email", "actor": "agent-1", "arguments": {"to": "a@example.com"}}) for _ in range(3)]
held = eng.evaluate({"tool": "refund", "domain": "payments", "actor": "agent-1", "value": 250, "arguments": {"amount": 250}})
print(json.dumps({"sent": [d.result.value for d in sent], "request_ids": [d.request_id for d in sent],
                  "approval_id": held.approval_id, "held": held.request_id}), flush=True)
os._exit(0)  # no close, no cleanup: what evaluate returned must already be on disk
""",
        db,
    )
    assert out["sent"] == ["allowed"] * 3

    with Engine(db) as eng:
        for rid in out["request_ids"]:
            assert eng.get_decision(rid).allowed
        fourth = eng.evaluate(email())
        assert fourth.result is DecisionResult.blocked
        assert "max_per_hour 3" in fourth.reason and "email-rate" in fourth.reason
        assert eng.evaluate(email("agent-2")).allowed  # the count is per actor

        pending = eng.list_approvals()
        assert [(a.approval_id, a.request_id, a.status) for a in pending] == [
            (out["approval_id"], out["held"], ApprovalStatus.pending)]  # fmt: skip
        assert pending[0].arguments == {"amount": 250}
        assert eng.verify_audit().ok


def test_parent_writes_child_reads(tmp_path: Path) -> None:
    db = tmp_path / "clearance.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
        for _ in range(3):
            assert eng.evaluate(email()).allowed
        held = eng.evaluate(refund(500))
        assert held.requires_approval
        events = eng.verify_audit().events_checked

    out = run_child(
        """
eng = Engine(db)
fourth = eng.evaluate({"tool": "send_email", "actor": "agent-1", "arguments": {"to": "a@example.com"}})
pending = eng.list_approvals()
report = eng.verify_audit()
print(json.dumps({"result": fourth.result.value, "reason": fourth.reason, "policy_version": fourth.policy_version,
                  "pending": [[a.approval_id, a.status.value, a.value] for a in pending],
                  "ok": report.ok, "events": report.events_checked}), flush=True)
os._exit(0)
""",
        db,
    )
    assert out["result"] == "blocked" and "max_per_hour 3" in out["reason"]
    assert out["policy_version"] == "1"
    assert out["pending"] == [[held.approval_id, "pending", 500.0]]
    assert out["ok"] is True and out["events"] == events + 1  # its own decision added one event


def test_approval_resolved_in_one_process_is_claimed_in_another(tmp_path: Path) -> None:
    db = tmp_path / "clearance.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
        held = eng.evaluate(refund(500))

    run_child(
        f"""
eng = Engine(db)
a = eng.resolve_approval({held.approval_id!r}, "approved", approver="alice", comment="ok")
c = eng.claim_execution({held.request_id!r}, claimant="child", arguments={{"amount": 500}})
print(json.dumps({{"status": a.status.value, "claimed_by": c.claimed_by}}), flush=True)
os._exit(0)  # claimed and never reported: the crash case
""",
        db,
    )
    with Engine(db) as eng:
        approval = eng.get_approval(held.approval_id)
        assert approval.status is ApprovalStatus.approved and approval.resolved_by == "alice"
        execution = eng.get_execution(held.request_id)
        assert execution is not None and execution.status.value == "unknown" and execution.claimed_by == "child"
        assert eng.verify_audit().ok
