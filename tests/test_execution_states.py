"""Executions are a state machine whose illegal moves are refused (issue 17, defect 3).

Before: claim, then ``record_execution(id, "approval_required")``, then a second claim was
granted; and ``record_execution`` took any status for any call ("executed" for a blocked call
never claimed). Each test runs on the embedded engine and over HTTP (the ``engine`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest

from clearance.engine.executions import SHADOW_KEY
from clearance.errors import AlreadyClaimed, IllegalTransition, NotApproved


def _refund(value: int, **context: Any) -> dict[str, Any]:
    return {"tool": "refund_payment", "arguments": {"order": "o-1", "amount": value}, "actor": "agent-7",
            "domain": "payments", "value": value, "context": context}  # fmt: skip


def test_a_claimed_call_cannot_go_back_to_waiting_and_be_claimed_again(engine: Any) -> None:
    d = engine.evaluate(_refund(100))
    assert d.result.value == "allowed"
    assert engine.claim_execution(d.request_id, claimant="worker-1").status.value == "unknown"
    with pytest.raises(IllegalTransition, match="claimed"):
        engine.record_execution(d.request_id, "approval_required")
    with pytest.raises(AlreadyClaimed):
        engine.claim_execution(d.request_id, claimant="worker-2")
    assert engine.record_execution(d.request_id, "executed").status.value == "executed"


def test_a_blocked_call_can_never_be_reported_as_run(engine: Any) -> None:
    d = engine.evaluate({"tool": "delete_account", "arguments": {"id": "u-1"}, "actor": "agent-7"})
    assert d.result.value == "blocked"
    for status in ("executed", "failed", "approval_required", "rejected", "unknown"):
        with pytest.raises(IllegalTransition):
            engine.record_execution(d.request_id, status)
    assert engine.get_execution(d.request_id) is None  # nothing was written
    assert engine.record_execution(d.request_id, "blocked").status.value == "blocked"
    with pytest.raises(IllegalTransition, match="already recorded as blocked"):
        engine.record_execution(d.request_id, "executed")


def test_a_call_waiting_for_approval_runs_only_once_approved(engine: Any) -> None:
    d = engine.evaluate(_refund(900))
    assert d.result.value == "requires_approval"
    assert engine.record_execution(d.request_id, "approval_required").status.value == "approval_required"
    with pytest.raises(IllegalTransition, match="approval is pending"):
        engine.record_execution(d.request_id, "executed")
    with pytest.raises(IllegalTransition, match="no rejected or expired approval"):
        engine.record_execution(d.request_id, "rejected")
    engine.resolve_approval(d.approval_id, "approved", approver="alice")
    with pytest.raises(IllegalTransition, match="not waiting"):
        engine.record_execution(d.request_id, "approval_required")
    assert engine.claim_execution(d.request_id, claimant="w").status.value == "unknown"
    assert engine.record_execution(d.request_id, "failed", error="timeout").status.value == "failed"
    assert engine.record_execution(d.request_id, "failed").status.value == "failed"  # a retry of the same report
    with pytest.raises(IllegalTransition, match="already recorded as failed"):
        engine.record_execution(d.request_id, "executed")


def test_a_rejected_call_is_recorded_as_rejected_and_cannot_run(engine: Any) -> None:
    d = engine.evaluate(_refund(900))
    engine.resolve_approval(d.approval_id, "rejected", approver="alice", comment="no")
    with pytest.raises(IllegalTransition, match="approval is rejected"):
        engine.record_execution(d.request_id, "executed")
    with pytest.raises(NotApproved):
        engine.claim_execution(d.request_id, claimant="w")
    assert engine.record_execution(d.request_id, "rejected").status.value == "rejected"


def test_a_batch_refuses_the_illegal_reports_and_keeps_the_others(engine: Any) -> None:
    ok = engine.evaluate(_refund(10))
    blocked = engine.evaluate({"tool": "delete_account", "arguments": {"id": "u-2"}, "actor": "agent-7"})
    results = engine.record_executions([(ok.request_id, "executed", {"r": 1}, None),
                                        (blocked.request_id, "executed", None, None)])  # fmt: skip
    assert results[0].status.value == "executed"
    assert isinstance(results[1], IllegalTransition)
    assert engine.get_execution(blocked.request_id) is None


def test_shadow_mode_records_what_ran_but_never_claims_a_blocked_call(engine: Any) -> None:
    d = engine.evaluate({"tool": "delete_account", "arguments": {"id": "u-3"}, "actor": "agent-7",
                         "context": {SHADOW_KEY: "shadow"}})  # fmt: skip
    assert d.result.value == "blocked"  # the verdict is the same; the caller only observes it
    with pytest.raises(NotApproved):
        engine.claim_execution(d.request_id, claimant="w")
    assert engine.record_execution(d.request_id, "executed").status.value == "executed"
