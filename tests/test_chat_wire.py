"""The Chat Completions wire: Responses-shaped requests and transcripts in, chat bodies out, and back.

Every body we build is checked against ``CreateChatCompletionRequest`` in OpenAI's published spec.
"""

from __future__ import annotations

import json

import pytest
from adapter_support import declared
from openai_spec import assert_valid

from clearance.adapters.openai.chat import ChatStreamAssembler, from_chat_completion, to_chat_request, tool_spec

def assert_chat_body(body: dict) -> None:
    assert_valid("CreateChatCompletionRequest", body)
    assert set(body) <= declared("CreateChatCompletionRequest"), set(body) - declared("CreateChatCompletionRequest")


TOOL = {"type": "function", "name": "refund_payment", "description": "Refund an order.", "strict": True,
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"],
                       "additionalProperties": False}}  # fmt: skip
TRANSCRIPT = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Refund ord_1 and ord_2"},
    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "On it.", "annotations": []}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "refund_payment", "arguments": '{"order_id":"ord_1"}'},
    {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "refund_payment", "arguments": '{"order_id":"ord_2"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'},
    {"type": "function_call_output", "call_id": "call_2", "output": '{"status": "blocked"}'},
]  # fmt: skip


def test_a_transcript_becomes_chat_messages_with_calls_on_their_assistant_message() -> None:
    body = to_chat_request({"model": "gpt-4.1", "input": TRANSCRIPT, "instructions": "You are a clerk.", "tools": [TOOL],
                            "store": False, "include": ["reasoning.encrypted_content"]})  # fmt: skip
    assert_chat_body(body)
    assert [m["role"] for m in body["messages"]] == ["system", "developer", "user", "assistant", "tool", "tool"]
    assistant = body["messages"][3]
    assert assistant["content"] == "On it."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in assistant["tool_calls"]] == [
        ("call_1", "refund_payment", {"order_id": "ord_1"}), ("call_2", "refund_payment", {"order_id": "ord_2"})]
    assert body["messages"][4] == {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'}
    assert body["tools"] == [{"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}]
    assert "store" not in body and "include" not in body and "input" not in body


def test_settings_are_renamed_for_chat() -> None:
    fmt = {"type": "json_schema", "name": "ticket", "strict": True,
           "schema": {"type": "object", "properties": {"p": {"type": "string"}}, "required": ["p"], "additionalProperties": False}}  # fmt: skip
    body = to_chat_request({
        "model": "o4-mini", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 50, "temperature": 0.2,
        "reasoning": {"effort": "low"}, "text": {"format": fmt, "verbosity": "low"}, "stream": True,
        "tool_choice": {"type": "function", "name": "refund_payment"}, "tools": [TOOL], "store": True,
        "parallel_tool_calls": False, "metadata": {"k": "v"}, "user": "u1",
    })  # fmt: skip
    assert_chat_body(body)
    assert body["max_completion_tokens"] == 50 and body["reasoning_effort"] == "low" and body["verbosity"] == "low"
    assert body["response_format"] == {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "refund_payment"}}
    assert body["stream_options"] == {"include_usage": True} and body["store"] is True


def test_allowed_tools_choice_is_nested_for_chat() -> None:
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "refund_payment"}]}
    body = to_chat_request({"model": "m", "input": [{"role": "user", "content": "x"}], "tools": [TOOL], "tool_choice": choice})
    assert_chat_body(body)
    assert body["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "refund_payment"}}]}}


def test_content_chat_cannot_carry_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="'input_file' content part cannot be sent over Chat Completions"):
        to_chat_request({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]})


def test_tool_spec_leaves_non_function_tools_alone() -> None:
    assert tool_spec({"type": "web_search"}) == {"type": "web_search"}


COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Refunding.", "refusal": None,
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "refund_payment", "arguments": '{"order_id":"o"}'}}]}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}  # fmt: skip


def test_a_completion_becomes_a_responses_shaped_response() -> None:
    r = from_chat_completion(COMPLETION)
    assert r["status"] == "completed" and r["_raw"] == COMPLETION
    message, call = r["output"]
    assert message["content"] == [{"type": "output_text", "text": "Refunding.", "annotations": []}]
    assert (call["type"], call["call_id"], call["name"], call["arguments"]) == ("function_call", "call_9", "refund_payment", '{"order_id":"o"}')
    assert r["usage"] == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def test_length_and_content_filter_are_incomplete_and_no_choices_is_failed() -> None:
    cut = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": "length"}]}
    assert from_chat_completion(cut)["incomplete_details"] == {"reason": "max_output_tokens"}
    filtered = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": "content_filter"}]}
    assert from_chat_completion(filtered)["status"] == "incomplete"
    assert from_chat_completion({**COMPLETION, "choices": []})["status"] == "failed"


def chunk(delta: dict, finish: str | None = None, **extra: object) -> dict:
    return {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip


def test_chunks_become_the_same_events_as_the_responses_stream() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}), chunk({"content": "check."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "refund_payment", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "refund_payment", "arguments": '{"order'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"order_id":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '_id":"b"}'}}]}),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1", "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    ]  # fmt: skip
    asm = ChatStreamAssembler()
    out = [e for c in chunks for e in asm.feed(c)]
    final, trailing = asm.finish()
    types = [e["type"] for e in out + trailing]
    assert types == ["output_item_added", "llm_delta", "llm_delta", "output_item_added", "output_item_added",
                     "function_call_args_delta", "function_call_args_delta", "function_call_args_delta",
                     "function_call_args_delta", "llm_text_done", "function_call_args_done", "function_call_args_done",
                     "response_done"]  # fmt: skip
    assert [e["arguments"] for e in out if e["type"] == "function_call_args_done"] == ['{"order_id":"a"}', '{"order_id":"b"}']
    assert out[-3]["text"] == "Let me check."
    assert [i["call_id"] for i in final["output"] if i["type"] == "function_call"] == ["call_a", "call_b"]
    assert final["usage"]["total_tokens"] == 7
    raw = final["_raw"]
    assert raw["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] == '{"order_id":"b"}'
    assert all(e["raw"]["object"] == "chat.completion.chunk" for e in out)


def test_a_chat_stream_without_finish_reason_was_cut_and_runs_nothing() -> None:
    asm = ChatStreamAssembler()
    asm.feed(chunk({"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "t", "arguments": '{"a'}}]}))
    final, trailing = asm.finish()
    assert final["status"] == "failed" and final["output"] == []
    assert [(e["type"], e["reason"]) for e in trailing] == [("response_failed", "cut_off")]


def test_a_refusal_streams_as_refusal_deltas() -> None:
    asm = ChatStreamAssembler()
    out = [e for c in [chunk({"refusal": "I can't"}), chunk({"refusal": " do that."}), chunk({}, "stop")] for e in asm.feed(c)]
    assert [e["delta"] for e in out if e["type"] == "refusal_delta"] == ["I can't", " do that."]
    final, _ = asm.finish()
    assert final["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't do that."}]
