"""The governed agent loop, end to end: real SDK -> ScriptedOpenAI on loopback, real SQLite engine.

Every exchange is validated against OpenAI's published spec at teardown (``serve`` fixture in
adapter_support.py). What is asserted is behaviour the user relies on: which tools ran, with what,
what the model was told, what was recorded, and the shape ``run()`` returns.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from adapter_support import decision_rows, function_call_outputs, guard_for, refund_payment, tool_outputs

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Refund order ord_1 for 10"}]
DECISION_KEYS = {"allowed", "result", "reason", "request_id", "requires_approval", "risk_score", "matched_rules",
                 "precedents"}  # fmt: skip


class Calls:
    """A tool that records every call it gets."""

    def __init__(self, result: Any = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.result = result

    def refund_payment(self, order_id: str, amount: float) -> dict[str, Any]:
        self.calls.append({"order_id": order_id, "amount": amount})
        return self.result if self.result is not None else {"ok": True, "order_id": order_id, "amount": amount}

    def delete_account(self, account_id: str) -> str:
        self.calls.append({"account_id": account_id})
        return f"deleted {account_id}"


def refund_guard(server: ScriptedOpenAI, engine: Any, calls: Calls | None = None, **kw: Any) -> GuardedOpenAI:
    guard = guard_for(server, engine, **kw)
    fn = calls.refund_payment if calls is not None else refund_payment
    guard.tool("refund_payment", fn, value_from_args=lambda a: a["amount"])
    return guard


# ---------------------------------------------------------------------------- wire validity


def test_full_run_with_strict_sdk_response_validation(serve: Serve, engine: Engine) -> None:
    """A run through every turn kind with the SDK validating each body against its own types."""
    server = serve(
        turn.reasoning("The user wants refunds.", then=turn.text("Checking.") + turn.function_calls([
            ("refund_payment", {"order_id": "ord_1", "amount": 10}),
            ("refund_payment", {"order_id": "ord_2", "amount": 5000}),
            ("refund_payment", {"order_id": "ord_3", "amount": 700}),
        ])),  # fmt: skip
        turn.raw_function_call("refund_payment", '{"order_id": '),
        turn.function_call("no_such_tool", {}),
        turn.text("All done."),
    )
    client = openai.OpenAI(base_url=server.base_url, api_key="test", _strict_response_validation=True)
    calls = Calls()
    guard = refund_guard(server, engine, calls, client=client)
    result = guard.run(messages=USER, model="gpt-4.1", instructions="You are a refunds agent.")

    assert result["status"] == "approval_required"  # ord_3 waits; ord_1 ran, ord_2 was blocked
    assert calls.calls == [{"order_id": "ord_1", "amount": 10.0}]
    assert len(server.requests) == 1
    approval_id = result["pending_approvals"][0]["approval_id"]
    engine.resolve_approval(approval_id, "approved", approver="alice")
    result = guard.resume_after_approval(approval_id)
    assert result["status"] == "completed" and result["output_text"] == "All done."
    assert calls.calls == [{"order_id": "ord_1", "amount": 10.0}, {"order_id": "ord_3", "amount": 700.0}]
    assert len(server.requests) == 4
    # the SDK client was the one given, and it never retried on its own
    assert all(r.retry_count == 0 for r in server.requests)
    server.assert_all_played()


def test_requests_validate_on_async_guard_with_strict_client(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}), turn.text("ok"))

    async def main() -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", _strict_response_validation=True)
        guard = guard_for(server, engine, AsyncGuardedOpenAI, client=client)
        guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
        return await guard.run(messages=USER, model="gpt-4.1")

    result = asyncio.run(main())
    assert result["status"] == "completed" and result["execution"]["last"]["status"] == "executed"
    assert result["output_text"] == "ok"


# ---------------------------------------------------------------------------- allowed / blocked


def test_allowed_call_runs_with_parsed_arguments_and_its_output_goes_back(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}, call_id="call_a"),
                   turn.text("Refunded."))  # fmt: skip
    calls = Calls(result={"ok": True, "refund_id": "rf_1"})
    result = refund_guard(server, engine, calls).run(messages=USER, model="gpt-4.1")

    assert calls.calls == [{"order_id": "ord_1", "amount": 10.0}]
    second = server.requests[1].json
    [out] = function_call_outputs(second)
    assert out["call_id"] == "call_a"
    assert json.loads(out["output"]) == {"ok": True, "refund_id": "rf_1"}
    last = result["execution"]["last"]
    assert last["tool"] == "refund_payment" and last["status"] == "executed"
    assert last["decision"]["allowed"] is True and last["decision"]["result"] == "allowed"
    assert result["output_text"] == "Refunded."


def test_string_output_is_sent_verbatim(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("lookup", {"q": "x"}, call_id="call_s"), turn.text("ok"))
    guard = guard_for(server, engine)

    def lookup(q: str) -> str:
        return f"found {q}"

    guard.tool(lookup)
    guard.run(messages=USER, model="gpt-4.1")
    [out] = function_call_outputs(server.requests[1].json)
    assert out == {"type": "function_call_output", "call_id": "call_s", "output": "found x"}


def test_blocked_call_does_not_run_and_the_model_gets_a_structured_refusal(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("delete_account", {"account_id": "acc_9"}, call_id="call_del"),
                   turn.text("I could not delete it."))  # fmt: skip
    calls = Calls()
    guard = guard_for(server, engine)
    guard.tool("delete_account", calls.delete_account)
    result = guard.run(messages=USER, model="gpt-4.1")  # no exception

    assert calls.calls == []
    refusal = tool_outputs(server.requests[1].json)["call_del"]
    assert refusal["status"] == "blocked" and refusal["verdict"] == "blocked"
    assert "never-delete" in refusal["reason"]
    [row] = decision_rows(engine_db(engine), "delete_account")
    assert refusal["request_id"] == row["request_id"] and row["result"] == "blocked"
    last = result["execution"]["last"]
    assert last["status"] == "blocked" and last["decision"]["allowed"] is False
    assert last["decision"]["request_id"] == row["request_id"]
    assert result["status"] == "completed" and result["output_text"] == "I could not delete it."


def engine_db(engine: Engine) -> Path:
    """The SQLite file behind ``engine`` (tests here always use one)."""
    from sqlalchemy.engine import make_url

    database = make_url(engine.store.url).database
    assert database
    return Path(database)


@pytest.mark.parametrize(
    "arguments, loc",
    [
        ('{"order_id": "ord_1", "amount": ', ""),  # not JSON
        ("[1, 2]", ""),  # JSON, not an object
        ('{"order_id": "ord_1"}', "amount"),  # missing property
        ('{"order_id": "ord_1", "amount": "lots"}', "amount"),  # wrong type
        ('{"order_id": "ord_1", "amount": 1, "currency": "EUR"}', "currency"),  # unexpected property
    ],
)
def test_bad_arguments_never_reach_the_tool(serve: Serve, engine: Engine, arguments: str, loc: str) -> None:
    server = serve(turn.raw_function_call("refund_payment", arguments, call_id="call_bad"), turn.text("Sorry."))
    calls = Calls()
    result = refund_guard(server, engine, calls).run(messages=USER, model="gpt-4.1")

    assert calls.calls == []
    error = tool_outputs(server.requests[1].json)["call_bad"]
    assert error["error"] == "invalid_arguments" and error["tool"] == "refund_payment"
    assert loc in [d["loc"] for d in error["details"]]
    assert "Traceback" not in json.dumps(error)
    assert result["status"] == "completed" and result["output_text"] == "Sorry."
    assert result["execution"]["last"]["status"] == "failed"
    assert decision_rows(engine_db(engine)) == []  # nothing to decide on arguments that do not fit


def test_unknown_tool_gets_a_structured_error(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("transfer_all_money", {"to": "me"}, call_id="call_u"), turn.text("ok"))
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1")
    error = tool_outputs(server.requests[1].json)["call_u"]
    assert error["error"] == "unknown_tool" and error["tool"] == "transfer_all_money"
    assert error["available"] == ["refund_payment"]
    assert result["execution"]["last"]["status"] == "failed" and result["status"] == "completed"


def test_value_hook_that_fails_is_an_error_not_a_free_pass(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 10}, call_id="c1"), turn.text("ok"))
    calls = Calls()
    guard = guard_for(server, engine)
    guard.tool("refund_payment", calls.refund_payment, value_from_args=lambda a: a["no_such_key"])
    guard.run(messages=USER, model="gpt-4.1")
    assert calls.calls == []
    assert tool_outputs(server.requests[1].json)["c1"]["error"] == "invalid_arguments"


def test_parallel_calls_in_one_turn_are_all_decided(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.function_calls([
            ("refund_payment", {"order_id": "a", "amount": 1}, "call_1"),
            ("delete_account", {"account_id": "x"}, "call_2"),
            ("refund_payment", {"order_id": "b", "amount": 2}, "call_3"),
            ("refund_payment", {"order_id": "c", "amount": 3000}, "call_4"),
        ]),
        turn.text("done"),
    )  # fmt: skip
    calls = Calls()
    guard = refund_guard(server, engine, calls)
    guard.tool("delete_account", calls.delete_account)
    result = guard.run(messages=USER, model="gpt-4.1")

    assert sorted(c.get("order_id", "") for c in calls.calls) == ["a", "b"]
    rows = decision_rows(engine_db(engine))
    assert sorted(r["result"] for r in rows) == ["allowed", "allowed", "blocked", "blocked"]
    outs = function_call_outputs(server.requests[1].json)
    assert [o["call_id"] for o in outs] == ["call_1", "call_2", "call_3", "call_4"]  # the model's order
    by_call = {e["call_id"]: e["status"] for e in result["execution"]["events"]}
    assert by_call == {"call_1": "executed", "call_2": "blocked", "call_3": "executed", "call_4": "blocked"}


def test_async_guard_runs_allowed_calls_of_a_turn_concurrently(serve: Serve, engine: Engine) -> None:
    """Each tool waits for the other to have started: only concurrent execution lets both finish."""
    server = serve(turn.function_calls([("ping", {}, "call_ping"), ("pong", {}, "call_pong")]), turn.text("both"))

    async def main() -> dict[str, Any]:
        started = {"ping": asyncio.Event(), "pong": asyncio.Event()}

        async def meet(me: str, other: str) -> str:
            started[me].set()
            await asyncio.wait_for(started[other].wait(), timeout=5)
            return f"{me} met {other}"

        async def ping() -> str:
            return await meet("ping", "pong")

        async def pong() -> str:
            return await meet("pong", "ping")

        guard = guard_for(server, engine, AsyncGuardedOpenAI)
        guard.tool(ping)
        guard.tool(pong)
        return await asyncio.wait_for(guard.run(messages=USER, model="gpt-4.1"), timeout=20)

    result = asyncio.run(main())
    assert [e["status"] for e in result["execution"]["events"]] == ["executed", "executed"]
    assert tool_outputs(server.requests[1].json) == {"call_ping": "ping met pong", "call_pong": "pong met ping"}


def test_async_guard_runs_sync_tools_too(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 3}, call_id="c"), turn.text("ok"))
    calls = Calls()

    async def main() -> dict[str, Any]:
        guard = guard_for(server, engine, AsyncGuardedOpenAI)
        guard.tool("refund_payment", calls.refund_payment, value_from_args=lambda a: a["amount"])
        return await guard.run(messages=USER, model="gpt-4.1")

    result = asyncio.run(main())
    assert calls.calls == [{"order_id": "o", "amount": 3.0}] and result["output_text"] == "ok"


def test_sync_guard_runs_async_tools(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("lookup", {"q": "x"}, call_id="c"), turn.text("ok"))

    async def lookup(q: str) -> str:
        await asyncio.sleep(0)
        return f"found {q}"

    guard = guard_for(server, engine)
    guard.tool(lookup)
    guard.run(messages=USER, model="gpt-4.1")
    assert tool_outputs(server.requests[1].json) == {"c": "found x"}


# ---------------------------------------------------------------------------- turns and transcript


def test_max_turns_stops_the_loop(serve: Serve, engine: Engine) -> None:
    server = serve(*[turn.function_call("refund_payment", {"order_id": f"o{i}", "amount": 1}) for i in range(3)])
    calls = Calls()
    result = refund_guard(server, engine, calls).run(messages=USER, model="gpt-4.1", max_turns=2)
    assert result["status"] == "max_turns"
    assert len(server.requests) == 2 and len(calls.calls) == 2
    assert len(server.remaining) == 1


def test_guard_level_max_turns(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}))
    result = refund_guard(server, engine, max_turns=1).run(messages=USER, model="gpt-4.1")
    assert result["status"] == "max_turns" and len(server.requests) == 1


def test_stateless_run_carries_the_transcript_itself(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.reasoning("Need a refund.", then=turn.function_call("refund_payment", {"order_id": "o1", "amount": 5},
                                                                  call_id="call_1")),  # fmt: skip
        turn.reasoning("And another.", then=turn.function_call("refund_payment", {"order_id": "o2", "amount": 6},
                                                                call_id="call_2")),  # fmt: skip
        turn.text("Both refunded."),
    )
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1")  # store=False is the default
    assert result["output_text"] == "Both refunded."
    first, second, third = (r.json for r in server.requests)
    for body in (first, second, third):
        assert body["store"] is False
        assert "reasoning.encrypted_content" in body["include"]
        assert "previous_response_id" not in body
    reply1 = server.requests[0].response
    reasoning1 = next(i for i in reply1["output"] if i["type"] == "reasoning")
    assert [i.get("type", "message") for i in second["input"]] == ["message", "reasoning", "function_call",
                                                                    "function_call_output"]  # fmt: skip
    assert second["input"][0] == USER[0]
    replayed = second["input"][1]
    assert replayed["id"] == reasoning1["id"] and replayed["encrypted_content"] == reasoning1["encrypted_content"]
    assert second["input"][2]["call_id"] == "call_1" and second["input"][2]["name"] == "refund_payment"
    assert second["input"][3]["call_id"] == "call_1"
    # the third request holds everything so far, in order
    assert [i.get("type", "message") for i in third["input"]] == [
        "message", "reasoning", "function_call", "function_call_output", "reasoning", "function_call",
        "function_call_output",
    ]  # fmt: skip
    assert third["input"][:4] == second["input"]


def test_stateless_run_keeps_user_include_entries(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("hi"))
    refund_guard(server, engine).run(messages=USER, model="gpt-4.1", include=["message.output_text.logprobs"])
    assert server.requests[0].json["include"] == ["message.output_text.logprobs", "reasoning.encrypted_content"]


def test_store_true_chains_with_previous_response_id(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.reasoning("r", then=turn.function_call("refund_payment", {"order_id": "o1", "amount": 5}, call_id="c1")),
        turn.function_call("refund_payment", {"order_id": "o2", "amount": 6}, call_id="c2"),
        turn.text("done"),
    )
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1", instructions="Be brief.", store=True)
    assert result["output_text"] == "done"
    first, second, third = (r.json for r in server.requests)
    assert first["store"] is True and "previous_response_id" not in first and first["input"] == USER
    assert second["previous_response_id"] == server.requests[0].response["id"]
    assert [i["type"] for i in second["input"]] == ["function_call_output"] and second["input"][0]["call_id"] == "c1"
    assert third["previous_response_id"] == server.requests[1].response["id"]
    assert [i["call_id"] for i in third["input"]] == ["c2"]
    # instructions are not carried over by previous_response_id, so every request repeats them
    assert all(b["instructions"] == "Be brief." for b in (first, second, third))


def test_extra_create_args_store_true_also_chains(serve: Serve, engine: Engine) -> None:
    """The seed's documented override: ``extra_create_args={"store": True}``."""
    server = serve(turn.function_call("refund_payment", {"order_id": "o1", "amount": 5}), turn.text("done"))
    refund_guard(server, engine, extra_create_args={"store": True}).run(messages=USER, model="gpt-4.1")
    second = server.requests[1].json
    assert second["store"] is True and second["previous_response_id"] == server.requests[0].response["id"]
    assert [i["type"] for i in second["input"]] == ["function_call_output"]


def test_input_string_and_create_args_pass_through(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("hi"))
    refund_guard(server, engine).run(model="gpt-4.1", input="hello", temperature=0.2, metadata={"ticket": "T-1"})
    body = server.requests[0].json
    assert body["input"] == [{"role": "user", "content": "hello"}]
    assert body["temperature"] == 0.2 and body["metadata"] == {"ticket": "T-1"}


# ---------------------------------------------------------------------------- return shape and hooks


def test_return_shape(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}), turn.text("Refunded."))
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1")

    assert {"llm_response", "output_text", "execution"} <= set(result)
    assert result["llm_response"]["id"] == server.requests[-1].response["id"]
    assert result["llm_response"]["object"] == "response"
    assert result["output_text"] == "Refunded."
    events, last = result["execution"]["events"], result["execution"]["last"]
    assert last == events[-1]
    assert {"tool", "status", "decision"} <= set(last)
    assert last["tool"] == "refund_payment" and last["status"] == "executed"
    decision = last["decision"]
    assert DECISION_KEYS <= set(decision)
    assert decision["allowed"] is True and decision["result"] == "allowed" and decision["requires_approval"] is False
    assert isinstance(decision["reason"], str) and decision["reason"]
    assert 0.0 <= decision["risk_score"] <= 1.0
    assert isinstance(decision["matched_rules"], list) and isinstance(decision["precedents"], list)
    [row] = decision_rows(engine_db(engine))
    assert decision["request_id"] == row["request_id"]
    json.dumps(result)  # plain JSON all the way down


def test_run_without_tool_calls_has_no_last_event(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("Just text."))
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1")
    assert result["output_text"] == "Just text." and result["execution"] == {"events": [], "last": None}


def test_a_failed_response_ends_the_run_as_failed(serve: Serve, engine: Engine) -> None:
    server = serve(turn.failed("The model failed to generate a response."), turn.text("never"))
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1")
    assert result["status"] == "failed" and result["output_text"] == ""
    assert result["llm_response"]["error"]["code"] == "server_error"
    assert len(server.requests) == 1


def test_an_incomplete_response_is_reported_as_incomplete(serve: Serve, engine: Engine) -> None:
    server = serve(turn.incomplete("max_output_tokens", then=turn.text("Partial ans")))
    result = refund_guard(server, engine).run(messages=USER, model="gpt-4.1")
    assert result["status"] == "incomplete" and result["output_text"] == "Partial ans"
    assert result["llm_response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_calls_in_an_incomplete_response_never_run(serve: Serve, engine: Engine) -> None:
    """A response cut short (max_output_tokens) may hold a truncated call: none of its calls runs."""
    server = serve(turn.incomplete("max_output_tokens", then=turn.function_call("refund_payment", {"order_id": "o1", "amount": 1})))
    ran: list[str] = []

    def refund(order_id: str, amount: float) -> dict[str, Any]:
        ran.append(order_id)
        return {"ok": True}

    g = guard_for(server, engine)
    g.tool("refund_payment", refund)
    result = g.run(messages=[{"role": "user", "content": "refund"}], model="gpt-4.1")
    assert result["status"] == "incomplete" and ran == [] and result["execution"]["events"] == []
    assert len(server.requests) == 1


def test_on_decision_receives_identified_events(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.function_calls([("refund_payment", {"order_id": "a", "amount": 1}), ("refund_payment",
                                                                                 {"order_id": "b", "amount": 9000})]),
        turn.text("ok"),
    )  # fmt: skip
    seen: list[dict[str, Any]] = []
    result = refund_guard(server, engine, on_decision=seen.append).run(messages=USER, model="gpt-4.1")
    assert seen == result["execution"]["events"]
    assert len(seen) == 2
    rows = {r["request_id"]: r for r in decision_rows(engine_db(engine))}
    for event in seen:
        assert event["trace_id"] == result["trace_id"]
        assert event["event_id"].startswith("evt_")
        assert event["request_id"] in rows and rows[event["request_id"]]["trace_id"] == result["trace_id"]
        assert event["schema_version"] == 1 and event["source_version"].startswith("clearance-openai@")
    assert len({e["event_id"] for e in seen}) == 2
    assert [e["seq"] for e in seen] == [1, 2]
    assert sorted(e["allowed"] for e in seen) == [False, True]  # the seed's audit hook reads event["allowed"]


def test_on_decision_that_raises_never_breaks_the_run(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "a", "amount": 1}), turn.text("fine"))
    calls = Calls()

    def broken_hook(event: dict[str, Any]) -> None:
        raise RuntimeError("the log shipper is down")

    result = refund_guard(server, engine, calls, on_decision=broken_hook).run(messages=USER, model="gpt-4.1")
    assert result["output_text"] == "fine" and len(calls.calls) == 1
    assert result["execution"]["last"]["status"] == "executed"


def test_async_on_decision_hook_on_async_guard(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "a", "amount": 1}), turn.text("fine"))
    seen: list[str] = []

    async def main() -> dict[str, Any]:
        async def hook(event: dict[str, Any]) -> None:
            seen.append(event["event_id"])

        guard = guard_for(server, engine, AsyncGuardedOpenAI, on_decision=hook)
        guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
        result = await guard.run(messages=USER, model="gpt-4.1")
        await asyncio.sleep(0.01)  # the hook is scheduled, not awaited by the run
        return result

    result = asyncio.run(main())
    assert seen == [result["execution"]["last"]["event_id"]]


def test_list_tools_is_what_the_request_carries(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("hi"))
    guard = refund_guard(server, engine)

    @guard.tool(description="Look an order up.")
    def lookup_order(order_id: str, verbose: bool = False) -> dict[str, Any]:
        return {}

    guard.run(messages=USER, model="gpt-4.1")
    assert guard.list_tools() == server.requests[0].json["tools"]
    assert [t["name"] for t in guard.list_tools()] == ["refund_payment", "lookup_order"]
    assert all(t["type"] == "function" and t["strict"] is True and "function" not in t for t in guard.list_tools())


def test_registering_a_tool_twice_is_refused(serve: Serve, engine: Engine) -> None:
    server = serve()
    guard = refund_guard(server, engine)
    with pytest.raises(ValueError, match="already registered"):
        guard.tool("refund_payment", refund_payment)


def test_a_tool_that_raises_is_failed_the_model_is_told_and_the_run_goes_on(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.function_call("flaky", {"n": 1}, call_id="c1"),
        turn.function_call("refund_payment", {"order_id": "o", "amount": 1}, call_id="c2"),
        turn.text("recovered"),
    )
    calls = Calls()
    guard = refund_guard(server, engine, calls)

    @guard.tool
    def flaky(n: int) -> int:
        raise ConnectionError("payments API unreachable")

    result = guard.run(messages=USER, model="gpt-4.1")
    told = tool_outputs(server.requests[1].json)["c1"]
    assert told["status"] == "failed" and "payments API unreachable" in told["error"]
    assert "Traceback" not in told["error"]
    assert [e["status"] for e in result["execution"]["events"]] == ["failed", "executed"]
    assert result["output_text"] == "recovered" and len(calls.calls) == 1
    failed = result["execution"]["events"][0]
    assert failed["decision"]["allowed"] is True  # it was allowed; it failed when run
    execution = engine.get_execution(failed["request_id"])
    assert execution is not None and execution.status.value == "failed"


def test_shadow_mode_runs_a_blocked_call_and_records_the_decision(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("delete_account", {"account_id": "acc_1"}, call_id="c"), turn.text("ok"))
    calls = Calls()
    guard = guard_for(server, engine, mode="shadow")
    guard.tool("delete_account", calls.delete_account)
    result = guard.run(messages=USER, model="gpt-4.1")

    assert calls.calls == [{"account_id": "acc_1"}]
    assert tool_outputs(server.requests[1].json) == {"c": "deleted acc_1"}
    [row] = decision_rows(engine_db(engine), "delete_account")
    assert row["result"] == "blocked"
    last = result["execution"]["last"]
    assert last["status"] == "executed" and last["enforced"] is False
    assert last["decision"]["result"] == "blocked" and last["decision"]["request_id"] == row["request_id"]
    execution = engine.get_execution(row["request_id"])
    assert execution is not None and execution.status.value == "executed"


def test_invalid_guard_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        GuardedOpenAI(openai_api_key="k", fail_mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GuardedOpenAI(openai_api_key="k", mode="audit")  # type: ignore[arg-type]


def test_check_tool_decides_and_records_without_running(serve: Serve, engine: Engine) -> None:
    server = serve()
    calls = Calls()
    guard = refund_guard(server, engine, calls)
    allowed = guard.check_tool("refund_payment", {"order_id": "o", "amount": 10})
    blocked = guard.check_tool("refund_payment", {"order_id": "o", "amount": 9000})
    assert calls.calls == [] and server.requests == []
    assert allowed["allowed"] is True and blocked["allowed"] is False and blocked["result"] == "blocked"
    assert {r["request_id"] for r in decision_rows(engine_db(engine))} == {allowed["request_id"], blocked["request_id"]}
    execution = engine.get_execution(allowed["request_id"])
    assert execution is not None and execution.status.value == "not_run"


# ---------------------------------------------------------------------------- safety


def test_no_tool_runs_before_its_decision_is_durable(serve: Serve, engine: Engine, db_path: Path) -> None:
    """Inside the tool, a separate connection to the file already sees the decision, allowed."""
    server = serve(
        turn.function_calls([("refund_payment", {"order_id": "o1", "amount": 1}),
                             ("refund_payment", {"order_id": "o2", "amount": 2})]),
        turn.text("ok"),
    )  # fmt: skip
    seen: list[tuple[str, str]] = []

    def refund(order_id: str, amount: float) -> str:
        con = sqlite3.connect(db_path)
        try:
            rows = con.execute("SELECT request_id, result, arguments FROM decisions WHERE tool = 'refund_payment'").fetchall()
        finally:
            con.close()
        mine = [(rid, result) for rid, result, args in rows if json.loads(args)["order_id"] == order_id]
        assert len(mine) == 1 and mine[0][1] == "allowed", mine
        # and a fresh engine on the same file agrees
        with Engine(db_path) as fresh:
            assert fresh.get_decision(mine[0][0]).allowed
        seen.append(mine[0])
        return "ok"

    guard = guard_for(server, engine)
    guard.tool("refund_payment", refund, value_from_args=lambda a: a["amount"])
    result = guard.run(messages=USER, model="gpt-4.1")
    assert [e["status"] for e in result["execution"]["events"]] == ["executed", "executed"]
    assert len(seen) == 2


class BrokenEngine:
    """An engine whose ``evaluate`` fails; everything else is the real one."""

    def __init__(self, real: Engine) -> None:
        self.real = real

    def evaluate(self, action: Any) -> Any:
        raise RuntimeError("database is locked")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_fail_closed_when_the_engine_cannot_decide(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}, call_id="c"), turn.text("ok"))
    calls = Calls()
    result = refund_guard(server, BrokenEngine(engine), calls).run(messages=USER, model="gpt-4.1")  # default closed
    assert calls.calls == []
    last = result["execution"]["last"]
    assert last["status"] == "blocked" and last["decision"]["allowed"] is False
    assert "failing closed" in last["decision"]["reason"] and "database is locked" in last["decision"]["reason"]
    told = tool_outputs(server.requests[1].json)["c"]
    assert told["status"] == "blocked" and "failing closed" in told["reason"]
    assert result["output_text"] == "ok"


def test_fail_closed_on_the_async_guard(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}), turn.text("ok"))
    calls = Calls()

    class AsyncBroken:
        async def evaluate(self, action: Any) -> Any:
            raise ConnectionError("engine server unreachable")

    async def main() -> dict[str, Any]:
        guard = guard_for(server, AsyncBroken(), AsyncGuardedOpenAI)
        guard.tool("refund_payment", calls.refund_payment)
        return await guard.run(messages=USER, model="gpt-4.1")

    result = asyncio.run(main())
    assert calls.calls == [] and result["execution"]["last"]["status"] == "blocked"


def test_fail_open_runs_the_tool_and_says_so(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}, call_id="c"), turn.text("ok"))
    calls = Calls()
    seen: list[dict[str, Any]] = []
    guard = refund_guard(server, BrokenEngine(engine), calls, fail_mode="open", on_decision=seen.append)
    result = guard.run(messages=USER, model="gpt-4.1")
    assert calls.calls == [{"order_id": "o", "amount": 1.0}]
    last = result["execution"]["last"]
    assert last["status"] == "executed" and last["fail_open"] is True
    assert "failing open" in last["decision"]["reason"] and last["decision"]["request_id"] is None
    assert seen == [last]
    assert json.loads(function_call_outputs(server.requests[1].json)[0]["output"])["ok"] is True


@pytest.mark.server_process("interleaved runs over a real connection pool: each run's records are written by another "
                             "process before its run() returns")  # fmt: skip
def test_concurrent_runs_on_one_async_guard_each_record_their_executions(serve: Serve, engine: Engine) -> None:
    """Execution reports belong to their run, even when runs of one guard interleave."""

    def model(request: dict[str, Any]) -> Any:
        if any(item.get("type") == "function_call_output" for item in request["input"]):
            return turn.text("done")
        order = request["input"][0]["content"].split()[2]
        return turn.function_call("refund_payment", {"order_id": order, "amount": 10}).delayed(0.05)

    server = serve(*([model] * 8))

    async def main() -> list[tuple[str, Any]]:
        guard = guard_for(server, engine, AsyncGuardedOpenAI)
        guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
        runs = [guard.run(messages=[{"role": "user", "content": f"Refund order ord_{i} for 10"}], model="gpt-4.1")
                for i in range(4)]  # fmt: skip
        seen = []
        for finished in asyncio.as_completed(runs, timeout=30):
            rid = (await finished)["execution"]["last"]["request_id"]
            # checked the moment this run returns: its own report must already be written
            execution = engine.get_execution(rid)
            seen.append((rid, execution.status.value if execution else None))
        return seen

    seen = asyncio.run(main())
    assert len({rid for rid, _ in seen}) == 4
    assert [status for _, status in seen] == ["executed"] * 4
