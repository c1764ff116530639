"""run_stream: model text and governance decisions as one stream, sync and async.

Real SDK -> ScriptedOpenAI streaming SSE on loopback -> real SQLite engine. Every exchange is
checked against OpenAI's published spec at teardown (``serve`` in adapter_support.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from adapter_support import decision_rows, guard_for, refund_payment, tool_outputs
from adapter_support import recording_refund_guard as refund_guard

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI
from clearance.errors import AlreadyClaimed, ClearanceError, NotFound
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Refund order ord_1 for 10"}]


def collect_async(agen: Any) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        return [e async for e in agen]

    return asyncio.run(main())


def stream_events(kind: str, server: ScriptedOpenAI, engine: Engine, ran: list | None = None) -> list[dict[str, Any]]:
    if kind == "sync":
        return list(refund_guard(server, engine, GuardedOpenAI, ran).run_stream(messages=USER, model="gpt-4.1"))

    async def main() -> list[dict[str, Any]]:
        g = refund_guard(server, engine, AsyncGuardedOpenAI, ran)
        return [e async for e in g.run_stream(messages=USER, model="gpt-4.1")]

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_text_streams_as_deltas_then_done_then_final(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.text("Refunds are processed within five days."))
    events = stream_events(kind, server, engine)
    types = [e["type"] for e in events]
    deltas = [e["delta"] for e in events if e["type"] == "llm_delta"]
    assert len(deltas) > 1, "text arrives in pieces"
    assert "".join(deltas) == "Refunds are processed within five days."
    assert types.index("output_item_added") < types.index("llm_delta") < types.index("llm_text_done")
    [done] = [e for e in events if e["type"] == "llm_text_done"]
    assert done["text"] == "Refunds are processed within five days." and done["raw"]["type"] == "response.output_text.done"
    assert events[types.index("output_item_added")]["item"]["type"] == "message"
    assert types[-2:] == ["response_done", "final_response"]
    final = events[-1]["response"]
    assert final["output_text"] == "Refunds are processed within five days."
    assert final["status"] == "completed" and set(final) >= {"llm_response", "execution"}
    assert all("raw" in e for e in events if e["type"] not in ("final_response", "execution_event"))
    assert server.requests[0].json["stream"] is True


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_call_is_decided_when_its_item_is_done_and_the_next_turn_streams_on(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}), turn.text("Done."))
    ran: list[str] = []
    events = stream_events(kind, server, engine, ran)
    types = [e["type"] for e in events]
    assert ran == ["ord_1"]
    args = "".join(e["delta"] for e in events if e["type"] == "function_call_args_delta")
    assert args == '{"order_id":"ord_1","amount":10}' or args.replace(" ", "") == '{"order_id":"ord_1","amount":10}'
    done_args = types.index("function_call_args_done")
    decision = types.index("execution_event")
    assert done_args < types.index("response_done") < decision < types.index("llm_delta")
    execution = events[decision]["event"]
    assert execution["tool"] == "refund_payment" and execution["status"] == "executed"
    assert execution["decision"]["result"] == "allowed" and execution["request_id"]
    final = events[-1]
    assert final["type"] == "final_response" and final["response"]["output_text"] == "Done."
    assert final["response"]["execution"]["last"]["status"] == "executed"
    assert engine.get_execution(execution["request_id"]).status.value == "executed"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_blocked_call_streams_its_decision_and_never_runs(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_9", "amount": 5000}), turn.text("Sorry."))
    ran: list[str] = []
    events = stream_events(kind, server, engine, ran)
    assert ran == []
    [execution] = [e["event"] for e in events if e["type"] == "execution_event"]
    assert execution["status"] == "blocked" and "max_value" in execution["decision"]["reason"]
    assert events[-1]["response"]["output_text"] == "Sorry."


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_refusal_streams_as_refusal_deltas(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.refusal("I can't help with that."))
    events = stream_events(kind, server, engine)
    assert "".join(e["delta"] for e in events if e["type"] == "refusal_delta") == "I can't help with that."


def test_approval_in_a_stream_then_resumed_by_the_streaming_twin(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_7", "amount": 900}), turn.text("Refunded after approval."))
    ran: list[str] = []
    g = refund_guard(server, engine, GuardedOpenAI, ran)
    events = list(g.run_stream(messages=USER, model="gpt-4.1"))
    [pending] = [e["event"] for e in events if e["type"] == "execution_event"]
    assert pending["status"] == "approval_required" and ran == []
    final = events[-1]["response"]
    assert events[-1]["type"] == "final_response" and final["status"] == "approval_required"
    engine.resolve_approval(pending["approval_id"], "approved", approver="alice")
    resumed = list(g.resume_after_approval_stream(pending["approval_id"]))
    assert ran == ["ord_7"]
    assert [e["event"]["status"] for e in resumed if e["type"] == "execution_event"] == ["executed"]
    assert "".join(e["delta"] for e in resumed if e["type"] == "llm_delta") == "Refunded after approval."
    assert resumed[-1]["response"]["output_text"] == "Refunded after approval."


@pytest.mark.server_process("the async client's own sockets to a server process, through a streamed run and its resume")
def test_async_streaming_twin_of_resume(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_8", "amount": 900}), turn.text("ok"))
    ran: list[str] = []

    async def main() -> list[dict[str, Any]]:
        g = refund_guard(server, engine, AsyncGuardedOpenAI, ran)
        first = [e async for e in g.run_stream(messages=USER, model="gpt-4.1")]
        approval_id = first[-1]["response"]["pending_approvals"][0]["approval_id"]
        await g.engine.resolve_approval(approval_id, "approved", approver="alice")
        return [e async for e in g.resume_after_approval_stream(approval_id)]

    resumed = asyncio.run(main())
    assert ran == ["ord_8"] and resumed[-1]["response"]["output_text"] == "ok"


def test_seed_streaming_example_shape(serve: Serve, engine: Engine) -> None:
    """The bighub-openai README's streaming loop reads event["event"]["tool"] and event["response"]["output_text"]."""
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_123", "amount": 199.99}), turn.text("Refunded."))
    guard = refund_guard(server, engine)
    seen = []
    for event in guard.run_stream(messages=[{"role": "user", "content": "Refund order ord_123 for 199.99"}], model="gpt-4.1"):
        if event["type"] == "llm_delta":
            seen.append(event["delta"])
        elif event["type"] == "execution_event":
            seen.append(("tool", event["event"]["tool"], event["event"]["status"]))
        elif event["type"] == "final_response":
            seen.append(("done", event["response"]["output_text"]))
    assert ("tool", "refund_payment", "executed") in seen and seen[-1] == ("done", "Refunded.")


# -- faults: nothing partial ever runs; the run is saved and can be retried ---------------------
CALL = turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10})

#: Each way a streamed turn can fail. The cut points fall inside the call's argument deltas.
FAULTS = {
    "cut_abort": lambda: CALL.cut_after(5, mode="abort"),
    "cut_eof": lambda: CALL.cut_after(5, mode="eof"),
    "error_event": lambda: CALL.error_after(5, "The server is overloaded.", shape="both"),
    "error_event_spec_shape": lambda: CALL.error_after(5, "The server is overloaded.", shape="spec"),
    "response_failed": lambda: turn.failed("The model failed to generate a response."),
}
REASONS = {"cut_abort": {"stream_error"}, "cut_eof": {"cut_off"}, "error_event": {"error"},
           "error_event_spec_shape": {"error"}, "response_failed": {"response.failed"}}  # fmt: skip


def run_stream_events(kind: str, g: Any, **kw: Any) -> list[dict[str, Any]]:
    if kind == "sync":
        return list(g.run_stream(messages=USER, model="gpt-4.1", **kw))
    return collect_async(g.run_stream(messages=USER, model="gpt-4.1", **kw))


def retry_events(kind: str, g: Any, retry_id: str) -> list[dict[str, Any]]:
    if kind == "sync":
        return list(g.retry_run_stream(retry_id))
    return collect_async(g.retry_run_stream(retry_id))


def fail_then_retry(kind: str, g: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], BaseException | None]:
    """run_stream, then retry_run_stream with the retry id, then that retry id once more."""
    if kind == "sync":
        first = list(g.run_stream(messages=USER, model="gpt-4.1"))
        again = list(g.retry_run_stream(first[-1]["response"]["retry_id"]))
        try:
            list(g.retry_run_stream(first[-1]["response"]["retry_id"]))
        except ClearanceError as exc:
            return first, again, exc
        return first, again, None

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], BaseException | None]:
        # One event loop for the whole test: the async client's connections belong to it.
        first = [e async for e in g.run_stream(messages=USER, model="gpt-4.1")]
        again = [e async for e in g.retry_run_stream(first[-1]["response"]["retry_id"])]
        try:
            [e async for e in g.retry_run_stream(first[-1]["response"]["retry_id"])]
        except ClearanceError as exc:
            return first, again, exc
        return first, again, None

    return asyncio.run(main())


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failed_stream_ends_in_response_failed_runs_nothing_and_can_be_retried(
    serve: Serve, engine: Engine, db_path: Any, kind: str, fault: str
) -> None:
    server = serve(FAULTS[fault](), CALL, turn.text("Refunded."))
    ran: list[str] = []
    seen_at_failure: list[Any] = []

    def record(order_id: str, amount: float) -> dict[str, Any]:
        ran.append(order_id)
        return refund_payment(order_id, amount)

    g = guard_for(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI,
                  on_decision=lambda e: seen_at_failure.append((len(server.requests), len(decision_rows(db_path)))))  # fmt: skip
    g.tool("refund_payment", record, value_from_args=lambda a: a["amount"])
    events, again, second_retry = fail_then_retry(kind, g)

    types = [e["type"] for e in events]
    assert types.count("response_failed") == 1 and types[-2:] == ["response_failed", "final_response"]
    assert events[-2]["reason"] in REASONS[fault]
    assert "execution_event" not in types and "response_done" not in types
    final = events[-1]["response"]
    assert final["status"] == "failed" and final["output_text"] == "" and final["retry_id"]
    # The first decision is made after the retried request, and it is the only one in the store:
    # the failed turn was asked once (never retried behind the caller's back) and decided nothing.
    assert seen_at_failure[0] == (2, 1)

    # The run was saved: retrying asks the model again from where the run stood, once.
    assert ran == ["ord_1"]
    assert [e["event"]["status"] for e in again if e["type"] == "execution_event"] == ["executed"]
    done = again[-1]["response"]
    assert done["status"] == "completed" and done["output_text"] == "Refunded." and done["run_id"] == final["run_id"]
    assert server.requests[1].json["input"] == server.requests[0].json["input"], "nothing partial joined the transcript"
    assert isinstance(second_retry, AlreadyClaimed)
    assert len(decision_rows(db_path)) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_429_before_the_stream_starts_is_retried_and_the_stream_goes_on(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.error(429), CALL, turn.text("Done."))
    ran: list[str] = []
    g = refund_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI, ran)
    events = run_stream_events(kind, g)
    assert "response_failed" not in [e["type"] for e in events]
    assert ran == ["ord_1"] and events[-1]["response"]["output_text"] == "Done."
    assert [r.status for r in server.requests] == [429, 200, 200]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_incomplete_streamed_answer_is_reported_and_its_calls_never_run(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.incomplete("max_output_tokens", then=turn.text("Partial") + CALL))
    ran: list[str] = []
    g = refund_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI, ran)
    events = run_stream_events(kind, g)
    failed = [e for e in events if e["type"] == "response_failed"]
    assert [(e["reason"], e["error"]) for e in failed] == [("response.incomplete", {"reason": "max_output_tokens"})]
    assert ran == [] and "execution_event" not in [e["type"] for e in events]
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["output_text"] == "Partial" and "retry_id" not in final


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_parallel_calls_stream_their_arguments_and_are_all_decided(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(
        turn.function_calls([("refund_payment", {"order_id": "ord_a", "amount": 10}),
                             ("refund_payment", {"order_id": "ord_b", "amount": 5000})]),  # fmt: skip
        turn.text("One refunded, one refused."),
    )
    ran: list[str] = []
    g = refund_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI, ran)
    events = run_stream_events(kind, g)
    done = [e for e in events if e["type"] == "function_call_args_done"]
    assert [e["output_index"] for e in done] == [0, 1]
    for e in done:
        pieces = [d["delta"] for d in events if d["type"] == "function_call_args_delta" and d["item_id"] == e["item_id"]]
        assert "".join(pieces) == e["arguments"]
    statuses = {e["event"]["arguments"]["order_id"]: e["event"]["status"] for e in events if e["type"] == "execution_event"}
    assert statuses == {"ord_a": "executed", "ord_b": "blocked"} and ran == ["ord_a"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_reasoning_items_stream_and_travel_with_the_transcript(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.reasoning(["Check the amount."]) + CALL, turn.text("Done."))
    g = refund_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI)
    events = run_stream_events(kind, g)
    added = [e["item"]["type"] for e in events if e["type"] == "output_item_added"]
    assert added[:2] == ["reasoning", "function_call"]
    second = server.requests[1].json
    assert [i.get("type") for i in second["input"]][1:] == ["reasoning", "function_call", "function_call_output"]
    assert second["input"][1]["encrypted_content"], "stateless runs carry reasoning themselves"


def test_retry_refuses_an_approval_id_and_unknown_ids(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_7", "amount": 900}), turn.text("Not refunded."))
    g = refund_guard(server, engine)
    result = g.run(messages=USER, model="gpt-4.1")
    approval_id = result["pending_approvals"][0]["approval_id"]
    with pytest.raises(ClearanceError, match="approval id"):
        g.retry_run(approval_id)
    with pytest.raises(NotFound, match="no failed run has retry id 'rty_nope'"):
        g.retry_run("rty_nope")
    engine.resolve_approval(approval_id, "rejected", approver="alice")
    resumed = g.resume_after_approval(approval_id)  # the approval's run was not spent by the refused retry
    assert resumed["status"] == "completed" and resumed["execution"]["last"]["status"] == "rejected"


def test_a_failed_non_streamed_turn_can_be_retried_too(serve: Serve, engine: Engine) -> None:
    server = serve(CALL, turn.failed(), turn.text("Done."))
    ran: list[str] = []
    g = refund_guard(server, engine, GuardedOpenAI, ran)
    result = g.run(messages=USER, model="gpt-4.1")
    assert result["status"] == "failed" and ran == ["ord_1"]
    again = g.retry_run(result["retry_id"])
    assert again["status"] == "completed" and ran == ["ord_1"], "the tool of the earlier turn is not run again"
    assert tool_outputs(server.requests[2].json) == tool_outputs(server.requests[1].json)
