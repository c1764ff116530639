"""Mapping Responses stream events to the adapter's events, and deciding what a stream produced."""

from __future__ import annotations

from sdk_support import sdk_request

from clearance.adapters.openai.streaming import StreamAssembler

CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "refund", "arguments": "", "status": "in_progress"}
DONE_RESPONSE = {"id": "resp_1", "status": "completed", "output": [{**CALL, "arguments": '{"a":1}', "status": "completed"}]}


def feed_all(events: list[dict]) -> tuple[list[dict], StreamAssembler]:
    asm = StreamAssembler()
    out = [e for ev in events for e in asm.feed(ev)]
    return out, asm


def test_each_table_row_maps_with_its_raw_event() -> None:
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": CALL},
        {"type": "response.function_call_arguments.delta", "sequence_number": 2, "item_id": "fc_1", "output_index": 0, "delta": '{"a":'},
        {"type": "response.function_call_arguments.done", "sequence_number": 3, "item_id": "fc_1", "output_index": 0, "arguments": '{"a":1}'},
        {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "m", "output_index": 1, "content_index": 0, "delta": "Hi"},
        {"type": "response.output_text.done", "sequence_number": 5, "item_id": "m", "output_index": 1, "content_index": 0, "text": "Hi"},
        {"type": "response.refusal.delta", "sequence_number": 6, "item_id": "m", "output_index": 1, "content_index": 1, "delta": "No"},
        {"type": "response.completed", "sequence_number": 7, "response": DONE_RESPONSE},
    ]
    out, asm = feed_all(events)
    assert [e["type"] for e in out] == ["output_item_added", "function_call_args_delta", "function_call_args_done",
                                        "llm_delta", "llm_text_done", "refusal_delta", "response_done"]  # fmt: skip
    assert out[1]["delta"] == '{"a":' and out[2]["arguments"] == '{"a":1}'
    assert out[3]["delta"] == "Hi" and out[4]["text"] == "Hi" and out[5]["delta"] == "No"
    assert all(e["raw"] is ev for e, ev in zip(out, events[1:]))
    final, trailing = asm.finish()
    last = trailing[0] if trailing else None
    assert final is DONE_RESPONSE and last is None


def test_a_cut_stream_yields_response_failed_and_a_failed_response_without_output() -> None:
    out, asm = feed_all([
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": CALL},
        {"type": "response.function_call_arguments.delta", "sequence_number": 2, "item_id": "fc_1", "output_index": 0, "delta": '{"a":'},
    ])  # fmt: skip
    final, trailing = asm.finish()
    last = trailing[0] if trailing else None
    assert last is not None and last["type"] == "response_failed" and last["reason"] == "cut_off"
    assert final["status"] == "failed" and final["output"] == []


def test_an_error_event_fails_the_turn_once() -> None:
    out, asm = feed_all([{"type": "error", "sequence_number": 3, "code": "server_error", "message": "boom", "param": None}])
    assert [e["type"] for e in out] == ["response_failed"]
    assert out[0]["error"] == {"code": "server_error", "message": "boom"}
    final, trailing = asm.finish()
    last = trailing[0] if trailing else None
    assert last is None and final["status"] == "failed" and final["output"] == []


def test_response_failed_fails_the_turn_with_no_output() -> None:
    response = {"id": "resp_2", "status": "failed", "output": [CALL], "error": {"code": "server_error", "message": "x"}}
    out, asm = feed_all([{"type": "response.failed", "sequence_number": 5, "response": response}])
    assert [(e["type"], e["reason"]) for e in out] == [("response_failed", "response.failed")]
    assert out[0]["error"] == {"code": "server_error", "message": "x"}
    final, trailing = asm.finish()
    last = trailing[0] if trailing else None
    assert final == {"id": "resp_2", "status": "failed", "output": [], "error": {"code": "server_error", "message": "x"}}
    assert last is None


def test_response_incomplete_is_reported_failed_but_handed_on_as_incomplete() -> None:
    """As with run(): the text of an incomplete answer is kept; the loop runs none of its calls."""
    response = {"id": "resp_3", "status": "incomplete", "output": [CALL], "incomplete_details": {"reason": "max_output_tokens"}}
    out, asm = feed_all([{"type": "response.incomplete", "sequence_number": 5, "response": response}])
    assert [(e["type"], e["reason"]) for e in out] == [("response_failed", "response.incomplete")]
    assert out[0]["error"] == {"reason": "max_output_tokens"}
    final, trailing = asm.finish()
    last = trailing[0] if trailing else None
    assert final == response and last is None


def test_an_sdk_error_for_an_error_event_is_reported_as_that_error() -> None:
    import openai

    asm = StreamAssembler()
    exc = openai.APIError("overloaded", sdk_request(), body={"code": "server_error", "message": "overloaded"})
    event = asm.fail(exc)
    assert event["reason"] == "error" and event["error"] == {"code": "server_error", "message": "overloaded"}
    assert asm.finish()[0]["status"] == "failed"


def test_an_exception_while_iterating_fails_the_turn() -> None:
    asm = StreamAssembler()
    event = asm.fail(ConnectionError("peer closed"))
    assert event["type"] == "response_failed" and "peer closed" in event["error"]["message"]
    final, trailing = asm.finish()
    last = trailing[0] if trailing else None
    assert final["status"] == "failed" and last is None
