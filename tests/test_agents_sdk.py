"""An OpenAI Agents SDK agent under clearance (``clearance.adapters.agents``).

Real parts: the ``openai-agents`` SDK and its Responses model on the real ``openai`` client,
pointed at :class:`clearance.testing.ScriptedOpenAI` on loopback (every request checked against
OpenAI's spec by ``serve``); a SQLite file; the CLI and the resumed run in processes of their own.
The agent (tests/agents_sdk_support.py) is written without clearance and governed with one call;
its tools count their real runs in a file.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents_sdk_support import ACTOR, CONFIG, build_agent, governed, ran
from cli_support import run_cli
from server_support import RULES

from agents import Agent, Runner, function_tool
from clearance import AsyncEngine, Engine, parse_rules
from clearance.adapters.agents import ApproverRequired, govern, trace_for
from clearance.errors import ClearanceError
from clearance.model import Decision
from clearance.testing import turn

SUPPORT = Path(__file__).with_name("agents_sdk_support.py")


def decisions(engine: Any) -> dict[str, Decision]:
    """The adapter's decisions, by tool (the newest of each)."""
    return {e.payload["decision"]["tool"]: Decision.model_validate(e.payload["decision"])
            for e in engine.audit_events(type="decision.made", limit=1000)}  # fmt: skip


def outputs(request: Any) -> dict[str, Any]:
    """The function-call outputs a model request carried, by call id (JSON read where it is JSON)."""
    found = {}
    for item in request.json["input"]:
        if item.get("type") == "function_call_output":
            try:
                found[item["call_id"]] = json.loads(item["output"])
            except ValueError:
                found[item["call_id"]] = item["output"]
    return found


def call_ids(request: Any) -> dict[str, str]:
    return {i["name"]: i["call_id"] for i in request.json["input"] if i.get("type") == "function_call"}


@pytest.fixture
def store(db_path: Path) -> Any:
    eng = Engine(db_path)
    eng.apply_rules(parse_rules(RULES))
    yield eng
    eng.close()


def test_allowed_blocked_and_approved_by_the_cli_resumed_in_a_new_process_runs_once(serve, store, db_path, tmp_path) -> None:
    runs, state_file = tmp_path / "runs", tmp_path / "state.json"
    server = serve(
        turn.function_calls([("lookup_order", {"order_id": "ord_1"}), ("delete_account", {"customer_id": "cus_1"})]),
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 700}),
        turn.text("Refunded 700.00 on ord_1. I could not delete the account: policy forbids it."),
        turn.text("The refund was already made."),
    )
    agent = build_agent(server.base_url, runs)
    governance = governed(agent, store)

    async def first() -> Any:
        result = await Runner.run(agent, "Refund ord_1 in full and delete my account.", run_config=CONFIG)
        return result, await governance.approval(result.interruptions[0])

    result, approval = asyncio.run(first())
    # Allowed: ran and recorded. Blocked: never ran; the model read the structured refusal.
    assert ran(runs) == ["lookup_order ord_1"]
    made = decisions(store)
    assert store.get_execution(made["lookup_order"].request_id).status.value == "executed"
    assert store.get_execution(made["lookup_order"].request_id).result_summary["customer_id"] == "cus_1"
    refusal = outputs(server.requests[1])[call_ids(server.requests[1])["delete_account"]]
    assert refusal["status"] == "blocked" and refusal["request_id"] == made["delete_account"].request_id
    assert "never-delete" in refusal["reason"]
    # Needs approval: the SDK's own interruption, waiting for a clearance approval.
    [item] = result.interruptions
    assert item.tool_name == "refund_payment" and approval is not None and approval.status.value == "pending"
    assert approval.request_id == made["refund_payment"].request_id and approval.arguments["amount"] == 700
    state_file.write_text(result.to_state().to_string())

    cli = run_cli(["--db", str(db_path), "approvals", "approve", approval.approval_id, "--by", "alice"])
    assert cli.returncode == 0, cli.stdout + cli.stderr

    resumed = subprocess.run([sys.executable, str(SUPPORT), str(db_path), server.base_url, str(runs),
                              str(state_file)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    answer = json.loads(resumed.stdout)
    assert answer["final_output"].startswith("Refunded 700.00") and answer["interruptions"] == 0
    assert ran(runs) == ["lookup_order ord_1", "refund_payment ord_1 700.0"]
    refund = made["refund_payment"].request_id
    execution = store.get_execution(refund)
    assert (execution.status.value, execution.claimed_by) == ("executed", "clearance-agents")
    assert execution.result_summary == "refunded 700.00 on ord_1"
    assert store.get_approval(approval.approval_id).resolved_by == "alice"
    # The third request is the model hearing the refund's result: the whole conversation goes on.
    assert outputs(server.requests[2])[item.raw_item.call_id] == "refunded 700.00 on ord_1"
    # Outcomes attach to the recorded call, as for any other call: memory learns from them.
    assert store.report_outcome(refund, "succeeded", reported_by="ops").request_id == refund

    # The same serialized state resumed again: the call is claimed already, so it does not run twice.
    async def again() -> Any:
        from agents import RunState

        agent2 = build_agent(server.base_url, runs)
        g2 = governed(agent2, store)
        state = await RunState.from_string(agent2, state_file.read_text())
        assert await g2.apply_approvals(state) == []
        return await Runner.run(agent2, state, run_config=CONFIG)

    assert asyncio.run(again()).final_output == "The refund was already made."
    assert ran(runs).count("refund_payment ord_1 700.0") == 1
    assert outputs(server.requests[3])[item.raw_item.call_id]["status"] == "not_run"
    assert store.verify_audit().ok


def test_state_approve_records_the_approver_from_the_run_context(serve, engine, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_2", "amount": 600}), turn.text("Done."))
    agent = build_agent(server.base_url, runs)
    governed(agent, engine, approver=lambda ctx: ctx.context["user"])

    async def main() -> Any:
        result = await Runner.run(agent, "Refund ord_2.", context={"user": "bob"}, run_config=CONFIG)
        state = result.to_state()
        [item] = state.get_interruptions()
        state.approve(item)  # the SDK's own approval: clearance records who gave it
        return await Runner.run(agent, state, run_config=CONFIG)

    assert asyncio.run(main()).final_output == "Done."
    assert ran(runs) == ["refund_payment ord_2 600.0"]
    refund = decisions(engine)["refund_payment"]
    approval = engine.get_approval(refund.approval_id)
    assert (approval.status.value, approval.resolved_by) == ("approved", "bob")
    assert engine.get_execution(refund.request_id).status.value == "executed"


def test_always_approve_in_the_sdk_approves_later_calls_under_the_same_approver(serve, store, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_a", "amount": 600}),
                   turn.function_call("refund_payment", {"order_id": "ord_b", "amount": 700}), turn.text("Both."))  # fmt: skip
    agent = build_agent(server.base_url, runs)
    governed(agent, store, approver="bob")

    async def main() -> Any:
        result = await Runner.run(agent, "Refund ord_a and ord_b.", run_config=CONFIG)
        state = result.to_state()
        state.approve(state.get_interruptions()[0], always_approve=True)
        return await Runner.run(agent, state, run_config=CONFIG)

    result = asyncio.run(main())
    assert result.final_output == "Both." and not result.interruptions
    assert ran(runs) == ["refund_payment ord_a 600.0", "refund_payment ord_b 700.0"]
    approvals = store.list_approvals(None)
    assert [(a.arguments["order_id"], a.status.value, a.resolved_by) for a in approvals] == [
        ("ord_a", "approved", "bob"), ("ord_b", "approved", "bob")]


def test_state_approve_without_an_approver_identity_is_refused_and_runs_nothing(serve, store, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_3", "amount": 900}))
    agent = build_agent(server.base_url, runs)
    governed(agent, store)

    async def main() -> None:
        result = await Runner.run(agent, "Refund ord_3.", run_config=CONFIG)
        state = result.to_state()
        state.approve(state.get_interruptions()[0])
        await Runner.run(agent, state, run_config=CONFIG)

    with pytest.raises(ApproverRequired, match="approver= to govern"):
        asyncio.run(main())
    assert ran(runs) == []
    assert store.get_approval(decisions(store)["refund_payment"].approval_id).status.value == "pending"


def test_reject_in_clearance_tells_the_model_and_records_it(serve, store, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_4", "amount": 800}), turn.text("Not refunded."))
    agent = build_agent(server.base_url, runs)
    governance = governed(agent, store)

    async def main() -> Any:
        result = await Runner.run(agent, "Refund ord_4.", run_config=CONFIG)
        state = result.to_state()
        await governance.reject(state, state.get_interruptions()[0], approver="carol", comment="needs a manager")
        return await Runner.run(agent, state, run_config=CONFIG)

    assert asyncio.run(main()).final_output == "Not refunded."
    assert ran(runs) == []
    refund = decisions(store)["refund_payment"]
    [told] = outputs(server.requests[1]).values()
    assert told["status"] == "rejected" and "needs a manager" in told["reason"]
    assert store.get_execution(refund.request_id).status.value == "rejected"
    assert store.get_approval(refund.approval_id).resolved_by == "carol"


def test_two_approvers_keep_the_call_interrupted_until_the_second_answers(serve, store, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(turn.function_call("wire_transfer", {"to": "acme", "amount": 50}), turn.text("Sent."))
    agent = build_agent(server.base_url, runs)
    governance = governed(agent, store)

    async def main() -> Any:
        result = await Runner.run(agent, "Pay acme 50.", run_config=CONFIG)
        state = result.to_state()
        [item] = state.get_interruptions()
        first = await governance.approve(state, item, approver="alice")
        assert first is not None and first.status.value == "pending"  # one of two: still waiting
        assert [i.raw_item.call_id for i in await governance.apply_approvals(state)] == [item.raw_item.call_id]
        assert ran(runs) == []
        await governance.approve(state, item, approver="bob")
        return await Runner.run(agent, state, run_config=CONFIG)

    assert asyncio.run(main()).final_output == "Sent."
    assert ran(runs) == ["wire_transfer acme 50.0"]
    approval = store.get_approval(decisions(store)["wire_transfer"].approval_id)
    assert (approval.status.value, sorted(v.approver for v in approval.votes)) == ("approved", ["alice", "bob"])


def test_an_engine_that_cannot_decide_blocks_the_call(serve, tmp_path) -> None:
    import socket

    from clearance.remote import RemoteEngine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    runs = tmp_path / "runs"
    server = serve(turn.function_call("lookup_order", {"order_id": "ord_7"}), turn.text("I cannot look it up now."))
    agent = build_agent(server.base_url, runs)
    governed(agent, RemoteEngine(f"http://127.0.0.1:{port}", "clr_0000000000000000_x", retries=0))
    assert asyncio.run(Runner.run(agent, "Where is ord_7?", run_config=CONFIG)).final_output == "I cannot look it up now."
    assert ran(runs) == []
    [told] = outputs(server.requests[1]).values()
    assert told["status"] == "blocked" and "failing closed" in told["reason"]


def test_a_forgotten_decision_is_found_in_the_audit_trail_not_made_twice(serve, store, tmp_path, monkeypatch) -> None:
    import clearance.adapters.agents.gate as gate

    monkeypatch.setattr(gate, "MEMO_LIMIT", 0)  # nothing stays in memory between the SDK's two questions
    runs = tmp_path / "runs"
    server = serve(
        turn.function_calls([("lookup_order", {"order_id": "ord_8"}), ("delete_account", {"customer_id": "cus_8"}),
                             ("refund_payment", {"order_id": "ord_8", "amount": 700})]),  # fmt: skip
        turn.text("Done."),
    )
    agent = build_agent(server.base_url, runs)
    governance = governed(agent, store)

    async def main() -> Any:
        result = await Runner.run(agent, "Refund ord_8, delete cus_8.", run_config=CONFIG)
        state = result.to_state()
        [item] = state.get_interruptions()
        await governance.approve(state, item, approver="alice")
        return await Runner.run(agent, state, run_config=CONFIG)

    assert asyncio.run(main()).final_output == "Done."
    assert ran(runs) == ["lookup_order ord_8", "refund_payment ord_8 700.0"]
    made = store.audit_events(type="decision.made", limit=100)
    assert sorted(e.payload["decision"]["tool"] for e in made) == ["delete_account", "lookup_order", "refund_payment"]
    assert outputs(server.requests[1])[call_ids(server.requests[1])["delete_account"]]["status"] == "blocked"


def test_streamed_run_is_governed_the_same_way(serve, store, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(
        turn.function_calls([("lookup_order", {"order_id": "ord_5"}), ("delete_account", {"customer_id": "cus_5"}),
                             ("refund_payment", {"order_id": "ord_5", "amount": 700})]).streamed(),  # fmt: skip
        turn.text("Refunded; the account stays.").streamed(),
    )
    agent = build_agent(server.base_url, runs)
    governance = governed(agent, AsyncEngine(store))  # an asyncio engine works as well as a blocking one

    async def main() -> tuple[list[Any], Any, Any]:
        first = Runner.run_streamed(agent, "Refund ord_5, delete my account.", run_config=CONFIG)
        seen = [e async for e in first.stream_events()]
        state = first.to_state()
        [item] = first.interruptions
        await governance.approve(state, item, approver="alice")
        second = Runner.run_streamed(agent, state, run_config=CONFIG)
        seen += [e async for e in second.stream_events()]
        return seen, first, second

    seen, first, second = asyncio.run(main())
    assert ran(runs) == ["lookup_order ord_5", "refund_payment ord_5 700.0"]
    assert second.final_output == "Refunded; the account stays."
    tool_outputs = [e.item.output for e in seen if getattr(e, "name", None) == "tool_output"]
    assert any(json.loads(o).get("status") == "blocked" for o in tool_outputs if isinstance(o, str) and o.startswith("{"))
    made = decisions(store)
    assert store.get_approval(made["refund_payment"].approval_id).resolved_by == "alice"
    assert store.get_execution(made["refund_payment"].request_id).status.value == "executed"
    assert store.get_execution(made["delete_account"].request_id) is None


def test_failures_and_unusable_arguments_are_recorded_and_told(serve, store, tmp_path) -> None:
    runs = tmp_path / "runs"
    server = serve(
        turn.function_calls([("flaky_export", {"customer_id": "cus_6"}), ("lookup_order", {"order_id": 6})]),
        turn.text("The export failed."),
    )
    agent = build_agent(server.base_url, runs)
    governed(agent, store)
    assert asyncio.run(Runner.run(agent, "Export my data.", run_config=CONFIG)).final_output == "The export failed."
    assert ran(runs) == ["flaky_export cus_6"]  # lookup_order never ran on an integer order id
    export = decisions(store)["flaky_export"]
    execution = store.get_execution(export.request_id)
    assert execution.status.value == "failed" and execution.error == "RuntimeError: the export service is down"
    told = outputs(server.requests[1])
    ids = call_ids(server.requests[1])
    assert "error occurred" in told[ids["flaky_export"]]  # what the SDK tells the model, unchanged
    assert told[ids["lookup_order"]]["error"] == "invalid_arguments" and "order_id" in told[ids["lookup_order"]]["message"]
    assert "lookup_order" not in decisions(store)
    [refused] = store.audit_events(type="proposal.refused", trace_id=trace_for(ids["lookup_order"]))
    assert refused.payload["tool"] == "lookup_order"


def test_an_agents_mcp_tools_are_governed_the_same_way(serve, store, tmp_path) -> None:
    from agents.mcp import MCPServerStdio

    store.apply_rules(parse_rules(RULES + "  - id: credits\n    tool: issue_credit\n    require_approval_above: 500\n"))
    runs = tmp_path / "runs"
    server = serve(
        turn.function_calls([("issue_credit", {"customer_id": "cus_1", "amount": 20}),
                             ("issue_credit", {"customer_id": "cus_2", "amount": 900})]),  # fmt: skip
        turn.text("Credited both."),
    )
    credits = MCPServerStdio(params={"command": sys.executable, "args": [str(SUPPORT.with_name("agents_sdk_mcp_server.py")),
                                                                          str(runs)]}, name="credits")  # fmt: skip
    agent = build_agent(server.base_url, runs)
    agent.mcp_servers = [credits]
    governance = governed(agent, store, value={"refund_payment": "amount", "issue_credit": "amount"})

    async def main() -> Any:
        async with credits:
            result = await Runner.run(agent, "Credit cus_1 20 and cus_2 900.", run_config=CONFIG)
            assert ran(runs) == ["issue_credit cus_1 20.0"]  # allowed: ran; above 500: interrupted
            state = result.to_state()
            [item] = state.get_interruptions()
            assert item.tool_name == "issue_credit"
            await governance.approve(state, item, approver="alice")
            return await Runner.run(agent, state, run_config=CONFIG)

    assert asyncio.run(main()).final_output == "Credited both."
    assert ran(runs) == ["issue_credit cus_1 20.0", "issue_credit cus_2 900.0"]
    [credit] = [Decision.model_validate(e.payload["decision"]) for e in store.audit_events(type="decision.made")
                if e.payload["action"]["arguments"]["amount"] == 900]  # fmt: skip
    assert store.get_approval(credit.approval_id).resolved_by == "alice"
    assert store.get_execution(credit.request_id).status.value == "executed"


def test_govern_covers_handoffs_lists_what_it_leaves_and_governs_once(store) -> None:
    from agents import WebSearchTool

    @function_tool
    def ping() -> str:
        """Ping."""
        return "pong"

    @function_tool
    def pong() -> str:
        """Pong."""
        return "ping"

    billing = Agent(name="billing", tools=[pong])
    agent = Agent(name="front", tools=[ping, WebSearchTool()], handoffs=[billing])
    with pytest.raises(ClearanceError, match="nope"):
        govern(agent, store, actor=ACTOR, value={"nope": "amount"})
    assert agent.tools[0] is ping  # refused before anything changed
    first = govern(agent, store, actor=ACTOR)
    assert sorted(first.gates) == ["ping", "pong"] and billing.tools[0] is not pong
    assert any("web_search" in u for u in first.ungoverned)
    second = govern(agent, store, actor="agent-8")  # governed again: the new settings, one gate
    assert sorted(second.gates) == ["ping", "pong"] and second.gates["ping"] is not first.gates["ping"]
    assert agent.tools[0].__dict__["_clearance_gate"].original is ping
    assert agent.tools[0].on_invoke_tool == second.gates["ping"].invoke


def test_without_the_agents_sdk_the_import_says_what_to_install(monkeypatch) -> None:
    import importlib

    for name in [m for m in sys.modules if m.startswith("clearance.adapters.agents")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "agents", None)  # as if openai-agents were not installed
    with pytest.raises(ImportError, match=r'pip install "clearance\[agents\]"'):
        importlib.import_module("clearance.adapters.agents")
