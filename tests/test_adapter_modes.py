"""``decision_mode`` (globally and per tool) and ``resume_after_approval(approval_id, resolution=...)``.

The policy (adapter_support.RULES) blocks every ``delete_account`` and holds refunds above 500
for approval. Real SDK -> ScriptedOpenAI on loopback -> real SQLite, on both engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from adapter_support import guard_for, tool_outputs

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Close acc_1 and refund ord_9"}]
BOTH = turn.function_calls([("delete_account", {"account_id": "acc_1"}),
                            ("refund_payment", {"order_id": "ord_9", "amount": 700})])


def _tools(guard: Any, ran: list[str], **modes: str) -> None:
    def delete_account(account_id: str) -> str:
        ran.append(f"delete {account_id}")
        return f"deleted {account_id}"

    def refund_payment(order_id: str, amount: float) -> dict[str, Any]:
        ran.append(f"refund {order_id}")
        return {"ok": True}

    guard.tool("delete_account", delete_account, **({"decision_mode": modes["delete"]} if "delete" in modes else {}))
    guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"],
               **({"decision_mode": modes["refund"]} if "refund" in modes else {}))  # fmt: skip


def test_one_tool_shadowed_while_the_others_are_enforced(serve: Serve, engine: Engine) -> None:
    """The new tool is observed (decided, recorded, run); the refund stays enforced (held)."""
    server = serve(BOTH)
    ran: list[str] = []
    guard = guard_for(server, engine)
    _tools(guard, ran, delete="shadow")
    result = guard.run(messages=USER, model="gpt-4.1")
    assert ran == ["delete acc_1"], "the shadowed tool ran; the enforced one waits for approval"
    events = {e["tool"]: e for e in result["execution"]["events"]}
    assert events["delete_account"]["status"] == "executed" and events["delete_account"]["enforced"] is False
    assert events["delete_account"]["decision"]["result"] == "blocked", "the decision it would have had is recorded"
    assert events["refund_payment"]["status"] == "approval_required" and result["status"] == "approval_required"
    execution = engine.get_execution(events["delete_account"]["request_id"])
    assert execution is not None and execution.status.value == "executed"


@pytest.mark.parametrize("seed_value", ["submit", "submit_v2", "enforce"])
def test_the_seeds_values_enforce_per_tool_under_a_shadow_guard(serve: Serve, engine: Engine, seed_value: str) -> None:
    server = serve(turn.function_call("delete_account", {"account_id": "acc_1"}, call_id="c"), turn.text("refused"))
    ran: list[str] = []
    guard = guard_for(server, engine, decision_mode="shadow")
    _tools(guard, ran, delete=seed_value)
    result = guard.run(messages=USER, model="gpt-4.1")
    assert ran == [] and result["execution"]["last"]["status"] == "blocked"
    assert tool_outputs(server.requests[1].json)["c"]["status"] == "blocked"


def test_global_decision_mode_is_mode(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("delete_account", {"account_id": "acc_1"}), turn.text("ok"))
    ran: list[str] = []
    guard = guard_for(server, engine, decision_mode="shadow")
    _tools(guard, ran)
    assert guard.mode == "shadow"
    guard.run(messages=USER, model="gpt-4.1")
    assert ran == ["delete acc_1"]
    assert GuardedOpenAI(openai_api_key="k", decision_mode="submit_v2", engine=engine).mode == "enforce"


def test_bad_decision_modes_are_clear_errors(engine: Engine) -> None:
    with pytest.raises(ValueError, match="decision_mode must be 'enforce' or 'shadow'.*not 'audit'"):
        GuardedOpenAI(openai_api_key="k", decision_mode="audit", engine=engine)
    with pytest.raises(ValueError, match="disagree"):
        GuardedOpenAI(openai_api_key="k", mode="shadow", decision_mode="submit", engine=engine)
    guard = GuardedOpenAI(openai_api_key="k", engine=engine)
    with pytest.raises(ValueError, match="not 'observe'"):
        guard.tool("noop", lambda: None, decision_mode="observe")
    assert guard.list_tools() == [], "a tool refused for its mode is not half registered"


# -- resume_after_approval(approval_id, resolution=..., comment=..., approver=...) --------------------
REFUND = turn.function_call("refund_payment", {"order_id": "ord_9", "amount": 700}, call_id="big")


def test_resume_after_approval_resolves_then_resumes(serve: Serve, engine: Engine) -> None:
    server = serve(REFUND, turn.text("Refunded after approval."))
    ran: list[str] = []
    guard = guard_for(server, engine)
    _tools(guard, ran)
    pending = guard.run(messages=USER, model="gpt-4.1")
    approval_id = pending["pending_approvals"][0]["approval_id"]
    result = guard.resume_after_approval(approval_id, resolution="approved", comment="approved by on-call", approver="ops")
    assert ran == ["refund ord_9"] and result["output_text"] == "Refunded after approval."
    approval = engine.get_approval(approval_id)
    assert approval.status.value == "approved" and approval.comment == "approved by on-call"
    assert approval.resolved_by == "ops"


def test_resume_after_approval_with_a_rejection(serve: Serve, engine: Engine) -> None:
    server = serve(REFUND, turn.text("I could not refund it."))
    ran: list[str] = []
    guard = guard_for(server, engine)
    _tools(guard, ran)
    approval_id = guard.run(messages=USER, model="gpt-4.1")["pending_approvals"][0]["approval_id"]
    result = guard.resume_after_approval(approval_id, "rejected", comment="too large")
    assert ran == [] and result["execution"]["last"]["status"] == "rejected"
    assert tool_outputs(server.requests[1].json)["big"]["status"] == "rejected"


def test_resume_without_a_resolution_is_as_before(serve: Serve, engine: Engine) -> None:
    from clearance.errors import ApprovalNotPending

    server = serve(REFUND)
    guard = guard_for(server, engine)
    _tools(guard, [])
    approval_id = guard.run(messages=USER, model="gpt-4.1")["pending_approvals"][0]["approval_id"]
    with pytest.raises(ApprovalNotPending, match="still pending"):
        guard.resume_after_approval(approval_id)
    with pytest.raises(ValueError, match="go with resolution="):
        guard.resume_after_approval(approval_id, comment="no verdict")
    with pytest.raises(ValueError, match="'approved' or 'rejected', not 'maybe'"):
        guard.resume_after_approval(approval_id, resolution="maybe")  # type: ignore[arg-type]
    assert engine.get_approval(approval_id).status.value == "pending", "nothing was recorded"


def test_async_resume_after_approval_resolves_then_resumes(serve: Serve, engine: Engine) -> None:
    server = serve(REFUND, turn.text("Done."))
    ran: list[str] = []
    guard = guard_for(server, engine, AsyncGuardedOpenAI)
    _tools(guard, ran, delete="shadow")

    async def main() -> dict[str, Any]:
        pending = await guard.run(messages=USER, model="gpt-4.1")
        return await guard.resume_after_approval(pending["pending_approvals"][0]["approval_id"], resolution="approved")

    result = asyncio.run(main())
    assert ran == ["refund ord_9"] and result["output_text"] == "Done."
