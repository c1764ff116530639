"""Approvals and policy changes: an approved call is re-checked on claim when the rules changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clearance import Engine
from clearance.errors import NotApproved
from clearance.policy import parse_rules

V1 = "version: 1\nrules:\n  - {id: refunds, tool: refund, require_approval_above: 100}\n"
BLOCKS = "version: 1\nrules:\n  - {id: refunds, tool: refund, require_approval_above: 100, max_value: 300}\n"
STILL_ASKS = "version: 1\nrules:\n  - {id: refunds, tool: refund, require_approval_above: 200}\n"
REFUND = {"tool": "refund", "arguments": {"amount": 500}, "actor": "agent", "value": 500}


def _approved(engine: Engine) -> str:
    d = engine.evaluate(REFUND)
    assert d.result.value == "requires_approval"
    approval = engine.resolve_approval(d.approval_id, "approved", approver="alice")  # type: ignore[arg-type]
    assert approval.policy_version == _granted_under(engine, d.approval_id) == "1"
    return d.request_id


def _granted_under(engine: Any, approval_id: str) -> str:
    """The policy version the approval's ``approval.resolved`` event in the chain records."""
    [event] = [e for e in engine.audit_events(type="approval.resolved", limit=1000) if e.payload["approval_id"] == approval_id]
    return event.payload["policy_version"]


def test_an_approval_granted_under_v1_is_not_run_when_v2_blocks_it(tmp_path: Path) -> None:
    with Engine(tmp_path / "a.db") as engine:
        engine.apply_rules(parse_rules(V1))
        request_id = _approved(engine)
        engine.apply_rules(parse_rules(BLOCKS))
        with pytest.raises(NotApproved, match=r"approved under policy version 1, but policy version 2 blocks it: "
                                              r"refund of 500.00 exceeds max_value 300"):  # fmt: skip
            engine.claim_execution(request_id, claimant="worker", arguments=REFUND["arguments"])
        assert engine.get_execution(request_id) is None  # not claimed, not run
        # Rules that still ask (or allow) leave the approval standing.
        engine.apply_rules(parse_rules(STILL_ASKS))
        assert engine.claim_execution(request_id, claimant="worker").status.value == "unknown"
        assert engine.verify_audit().ok


def test_unchanged_rules_and_a_pending_approval_answered_under_new_rules(tmp_path: Path) -> None:
    with Engine(tmp_path / "b.db") as engine:
        engine.apply_rules(parse_rules(V1))
        assert engine.claim_execution(_approved(engine), claimant="w").status.value == "unknown"
        pending = engine.evaluate(REFUND)
        engine.apply_rules(parse_rules(BLOCKS))
        approval = engine.resolve_approval(pending.approval_id, "approved", approver="bob")  # type: ignore[arg-type]
        assert (approval.policy_version, _granted_under(engine, pending.approval_id)) == ("1", "2")
        with pytest.raises(NotApproved, match="policy version 2 blocks it"):
            engine.claim_execution(pending.request_id, claimant="w")


def test_a_resumed_run_does_not_run_a_call_the_new_rules_block_and_tells_the_model(serve: Any, engine: Any) -> None:
    """Over the adapter (embedded and remote engine): approved, then the policy changed, then resumed."""
    import json

    from adapter_support import RULES, recording_refund_guard

    from clearance.testing import turn

    server = serve(turn.function_call("refund_payment", {"order_id": "ord_7", "amount": 900}), turn.text("It was not refunded."))
    ran: list[str] = []
    g = recording_refund_guard(server, engine, ran=ran)
    first = g.run(input="Refund ord_7 for 900", model="gpt-4.1")
    approval_id = first["pending_approvals"][0]["approval_id"]
    engine.resolve_approval(approval_id, "approved", approver="alice")
    tighter = parse_rules(RULES)
    rules = [r.model_copy(update={"max_value": 800}) if r.tool == "refund_payment" and r.max_value is not None else r
             for r in tighter.rules]  # fmt: skip
    engine.apply_rules(tighter.model_copy(update={"rules": rules}))
    resumed = g.resume_after_approval(approval_id)
    assert ran == [] and resumed["output_text"] == "It was not refunded."
    last = resumed["execution"]["last"]
    assert last["status"] == "blocked" and "blocks it" in last["decision"]["reason"]
    told = json.loads(next(i for i in reversed(server.requests[1].json["input"]) if i.get("type") == "function_call_output")["output"])
    assert told["status"] == "blocked" and "policy has changed" in told["message"]
    assert engine.get_execution(first["pending_approvals"][0]["request_id"]).status.value == "not_run"
