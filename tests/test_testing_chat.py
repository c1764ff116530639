"""clearance.testing.ScriptedOpenAI speaking Chat Completions, driven by the real openai SDK (2.x and 3.x).

Every exchange a test makes is checked on teardown against OpenAI's published spec
(``strict_one_of=True``): each request that played a model turn against
``CreateChatCompletionRequest``, each non-streamed 200 against
``CreateChatCompletionResponse``, each streamed chunk against
``CreateChatCompletionStreamResponse`` (honouring the spec's OpenAPI-3.0 ``nullable``
marks), the final completion a stream delivers against ``CreateChatCompletionResponse``,
and each error body (HTTP or mid-stream) against ``ErrorResponse``. Clients run with
``_strict_response_validation=True`` so the SDK's pydantic types check every body and chunk.

Observed SDK behaviour on faults (asserted below), the same as for Responses streams:
``cut_after(mode="abort")`` -> openai 3.x raises ``APIConnectionError``, 2.x lets
``httpx.RemoteProtocolError`` through; ``mode="eof"`` -> the iteration just stops and
``chat.completions.stream(...).get_final_completion()`` returns what arrived, with
``finish_reason=None``; an ``{"error": ...}`` line -> ``openai.APIError`` while iterating.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai_spec import assert_valid
from sdk_support import aclient, client

from clearance.testing import ModelTurn, ScriptedOpenAI, turn
from clearance.testing.chat import ChatRenderError, chat_chunks, render_chat_completion
from clearance.testing.stream import argument_chunks, text_chunks

OPENAI_MAJOR = int(openai.__version__.split(".")[0])

REFUND = {
    "type": "function",
    "function": {
        "name": "refund_payment",
        "description": "Refund part of an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id", "amount"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TOOLS = [REFUND, LOOKUP]
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a refunds agent."},
    {"role": "user", "content": "Refund order ord_1 by 10."},
]


def check_chat(rec: Any) -> None:
    """One recorded Chat Completions exchange against the spec."""
    assert rec.api == "chat"
    if isinstance(rec.turn, ModelTurn):
        assert_valid("CreateChatCompletionRequest", rec.json, strict_one_of=True, nullable=True)
    if rec.status == 200 and isinstance(rec.turn, ModelTurn):
        assert_valid("CreateChatCompletionResponse", rec.response, strict_one_of=True, nullable=True)
        assert rec.response["object"] == "chat.completion"
    elif rec.status is not None and rec.status >= 400:
        assert_valid("ErrorResponse", rec.response, strict_one_of=True)
    for event in rec.events or ():
        if "error" in event:
            assert_valid("ErrorResponse", event, strict_one_of=True)
        else:
            assert_valid("CreateChatCompletionStreamResponse", event, strict_one_of=True, nullable=True)
            assert event["object"] == "chat.completion.chunk" and event["id"] == rec.response["id"]


@pytest.fixture
def wire_check() -> Callable[[ScriptedOpenAI], None]:
    """What ``serve`` (conftest.py) checks at teardown here: each Chat Completions exchange."""

    def check(server: ScriptedOpenAI) -> None:
        for rec in server.requests:
            if rec.api == "chat":
                check_chat(rec)

    return check


def params(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("model", "gpt-4.1")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("tools", TOOLS)
    return kwargs


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


# --------------------------------------------------------------------------- batch


def test_text_turn(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Refunded order ord_1."))
    completion = client(server).chat.completions.create(**params())
    (choice,) = completion.choices
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert choice.message.role == "assistant" and choice.message.content == "Refunded order ord_1."
    assert choice.message.refusal is None and choice.message.tool_calls is None
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4.1" and completion.service_tier == "default"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (rec,) = server.requests
    assert rec.api == "chat" and rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.json["messages"] == MESSAGES and rec.json["tools"] == TOOLS
    assert rec.status == 200 and rec.response["id"] == completion.id and not rec.streamed
    assert rec.deployment is None and rec.bearer_token == "test" and rec.api_key is None
    server.assert_all_played()


def test_function_call_turns(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}, call_id="call_fixed"),
        turn.function_calls([("lookup_order", {"order_id": "ord_1"}), ("refund_payment", {"order_id": "ord_1", "amount": 5})]),
        turn.text("Done."),
    )
    c = client(server)
    first = c.chat.completions.create(**params())
    (call,) = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
    assert call.id == "call_fixed" and call.type == "function"
    assert call.function.name == "refund_payment" and json.loads(call.function.arguments) == {"order_id": "ord_1", "amount": 10}
    second = c.chat.completions.create(**params())
    calls = second.choices[0].message.tool_calls or []
    assert [tc.function.name for tc in calls] == ["lookup_order", "refund_payment"]
    assert all(tc.id.startswith("call_") for tc in calls) and calls[0].id != calls[1].id
    # The agent answers both calls with tool messages; the request validates against the spec.
    history = [
        *MESSAGES,
        second.choices[0].message.model_dump(exclude_none=True, exclude={"annotations"}),
        *[{"role": "tool", "tool_call_id": tc.id, "content": json.dumps({"ok": True})} for tc in calls],
    ]
    third = c.chat.completions.create(**params(messages=history))
    assert third.choices[0].message.content == "Done."
    recs = server.requests
    assert [m["role"] for m in recs[2].json["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert recs[2].json["messages"][2]["tool_calls"][0]["id"] == calls[0].id
    server.assert_all_played()


def test_malformed_arguments_are_sent_verbatim(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.raw_function_call("refund_payment", '{"order_id": "ord_1", "amount": '))
    completion = client(server).chat.completions.create(**params())
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.arguments == '{"order_id": "ord_1", "amount": '


def test_refusal_reasoning_and_mixed_turns(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.refusal("I can't help with that."),
        turn.reasoning("Check the order first.", then=turn.function_call("lookup_order", {"order_id": "ord_1"})),
        turn.text("Let me look.") + turn.function_call("lookup_order", {"order_id": "ord_1"}),
    )
    c = client(server)
    refused = c.chat.completions.create(**params())
    assert refused.choices[0].message.refusal == "I can't help with that."
    assert refused.choices[0].message.content is None and refused.choices[0].finish_reason == "stop"
    reasoned = c.chat.completions.create(**params(reasoning_effort="low"))
    message = reasoned.choices[0].message
    assert [tc.function.name for tc in message.tool_calls or []] == ["lookup_order"] and message.content is None
    assert "reasoning" not in json.dumps(server.requests[1].response["choices"])  # no reasoning items in chat
    assert not hasattr(message, "reasoning_content") or getattr(message, "reasoning_content", None) is None
    details = reasoned.usage.completion_tokens_details if reasoned.usage else None
    assert details is not None and details.reasoning_tokens and details.reasoning_tokens > 0
    mixed = c.chat.completions.create(**params())
    assert mixed.choices[0].message.content == "Let me look."
    assert mixed.choices[0].finish_reason == "tool_calls" and len(mixed.choices[0].message.tool_calls or []) == 1


def test_incomplete_usage_fields_annotations_and_n(serve: Callable[..., ScriptedOpenAI]) -> None:
    cite = {"type": "url_citation", "start_index": 0, "end_index": 4, "url": "https://example.com/", "title": "Ex"}
    server = serve(
        turn.incomplete(then=turn.text("Partial ans")),
        turn.incomplete("content_filter"),
        turn.text("Done.")
        .with_usage(input_tokens=100, output_tokens=7, cached_tokens=40, reasoning_tokens=3)
        .with_chat_fields(system_fingerprint="fp_custom"),
        turn.text("Hello ") + turn.text("docs", annotations=[cite]),
        turn.function_call("lookup_order", {"order_id": "ord_1"}),
    )
    c = client(server)
    cut = c.chat.completions.create(**params(max_completion_tokens=3))
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content == "Partial ans"
    filtered = c.chat.completions.create(**params())
    assert filtered.choices[0].finish_reason == "content_filter" and filtered.choices[0].message.content is None
    counted = c.chat.completions.create(**params())
    usage = counted.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 7, 107)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 3
    assert counted.system_fingerprint == "fp_custom"
    cited = c.chat.completions.create(**params())
    assert cited.choices[0].message.content == "Hello docs"
    (annotation,) = cited.choices[0].message.annotations or []
    assert annotation.type == "url_citation" and annotation.url_citation.url == "https://example.com/"
    assert (annotation.url_citation.start_index, annotation.url_citation.end_index) == (6, 10)
    two = c.chat.completions.create(**params(n=2))
    assert [ch.index for ch in two.choices] == [0, 1]
    ids = [(ch.message.tool_calls or [])[0].id for ch in two.choices]
    assert ids[0] != ids[1]


def test_async_client(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("one"), turn.function_call("lookup_order", {"order_id": "o"}).streamed())

    async def run() -> tuple[str | None, list[Any]]:
        async with aclient(server) as c:
            first = await c.chat.completions.create(**params())
            stream = await c.chat.completions.create(**params(), stream=True)
            chunks = [chunk async for chunk in stream]
            return first.choices[0].message.content, chunks

    content, chunks = asyncio.run(run())
    assert content == "one"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# --------------------------------------------------------------------------- streaming


def test_stream_text_chunks_in_order(serve: Callable[..., ScriptedOpenAI]) -> None:
    text = "Refunded order ord_1 by 10."
    server = serve(turn.text(text))
    with client(server).chat.completions.create(**params(), stream=True) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        chunks = list(stream)
    words = text_chunks(text)
    assert len(chunks) == 1 + len(words) + 1
    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in middle] == words
    assert all(c.choices[0].finish_reason is None for c in [first, *middle])
    assert last.choices[0].finish_reason == "stop" and last.choices[0].delta.content is None
    assert {c.id for c in chunks} == {server.requests[0].response["id"]}
    assert all(c.usage is None for c in chunks)
    (rec,) = server.requests
    assert rec.streamed and rec.done and len(rec.events) == len(chunks)
    assert all("usage" not in e for e in rec.events)  # no include_usage: no usage key at all
    assert rec.response["choices"][0]["message"]["content"] == text


def test_stream_wire_is_data_only_sse_ending_in_done(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Hi there"))
    body = {"model": "gpt-4.1", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=10) as http:
        reply = http.post(server.base_url + "/chat/completions", json=body)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    frames = reply.text.split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    payloads = frames[:-2]
    assert all(f.startswith("data: {") and "\nevent:" not in f and not f.startswith("event:") for f in payloads)
    chunks = [json.loads(f[len("data: ") :]) for f in payloads]
    assert chunks == server.requests[0].events
    *with_choices, usage_chunk = chunks
    assert all(c["usage"] is None for c in with_choices)
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == server.requests[0].response["usage"]


def test_stream_include_usage_through_the_sdk(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Done.").with_usage(input_tokens=50, output_tokens=2), turn.text("Again."))
    c = client(server)
    chunks = list(c.chat.completions.create(**params(), stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (50, 2)
    assert chunks[-2].choices[0].finish_reason == "stop" and all(ch.usage is None for ch in chunks[:-1])
    with c.chat.completions.stream(**params(), stream_options={"include_usage": True}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.usage is not None and final.usage.total_tokens == server.requests[1].response["usage"]["total_tokens"]
    assert final.choices[0].message.content == "Again."


def _tool_fragments(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [tc for d in deltas(chunks) for tc in d.get("tool_calls") or ()]


@pytest.mark.parametrize("interleave", [False, True])
def test_stream_parallel_tool_calls(serve: Callable[..., ScriptedOpenAI], interleave: bool) -> None:
    calls = [("lookup_order", {"order_id": "ord_1"}), ("refund_payment", {"order_id": "ord_1", "amount": 10})]
    server = serve(turn.function_calls(calls).streamed(interleave_tool_calls=interleave))
    if interleave:
        # The SDK's stream() helper takes a new tool-call index to mean the previous call is
        # finished, so interleaved fragments make it parse call 0's partial arguments and fail
        # (both SDK lines); raw iteration assembles them fine, by index.
        server.add(turn.function_calls(calls).streamed(interleave_tool_calls=True))
        with pytest.raises(ValueError), client(server).chat.completions.stream(**params()) as stream:
            list(stream)
        chunks = list(client(server).chat.completions.create(**params(), stream=True))
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        rec = server.requests[1]
        assert_valid("CreateChatCompletionResponse", rec.response, strict_one_of=True, nullable=True)
    else:
        with client(server).chat.completions.stream(**params()) as stream:
            events = list(stream)
            final = stream.get_final_completion()
        (rec,) = server.requests
    fragments = _tool_fragments(rec.events)
    heads = [f for f in fragments if "id" in f]
    assert [(h["index"], h["type"], h["function"]) for h in heads] == [
        (0, "function", {"name": "lookup_order", "arguments": ""}),
        (1, "function", {"name": "refund_payment", "arguments": ""}),
    ]
    assert all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments if "id" not in f)
    order = [f["index"] for f in fragments]
    pieces = [len(argument_chunks(json.dumps(a, separators=(",", ":")))) for _, a in calls]
    if interleave:
        assert order[:4] == [0, 1, 0, 1]
    else:
        assert order == [0] * (1 + pieces[0]) + [1] * (1 + pieces[1])
    for index, (name, arguments) in enumerate(calls):
        text = "".join(f["function"]["arguments"] for f in fragments if f["index"] == index)
        assert json.loads(text) == arguments
    if interleave:
        return
    # The helper assembles exactly what the non-streamed rendering holds.
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and message.content is None
    expected = rec.response["choices"][0]["message"]["tool_calls"]
    assert [(tc.id, tc.function.name, tc.function.arguments) for tc in message.tool_calls or []] == [
        (e["id"], e["function"]["name"], e["function"]["arguments"]) for e in expected
    ]
    assert [tc.function.parsed_arguments for tc in message.tool_calls or []] == [a for _, a in calls]
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [e.name for e in done] == ["lookup_order", "refund_payment"]


def test_stream_helper_text_refusal_and_mixed(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.text("Hello there"),
        turn.refusal("I can't do that."),
        turn.reasoning("think", then=turn.text("On it.") + turn.function_call("lookup_order", {"order_id": "o"})),
    )
    c = client(server)
    with c.chat.completions.stream(**params()) as stream:
        kinds = [e.type for e in stream]
        hello = stream.get_final_completion()
    assert kinds.count("content.delta") == 3 and "content.done" in kinds  # the role chunk's "" too
    assert hello.choices[0].message.content == "Hello there" and hello.choices[0].finish_reason == "stop"
    with c.chat.completions.stream(**params()) as stream:
        kinds = [e.type for e in stream]
        refused = stream.get_final_completion()
    assert "refusal.done" in kinds and "content.delta" not in kinds
    assert refused.choices[0].message.refusal == "I can't do that." and refused.choices[0].message.content is None
    with c.chat.completions.stream(**params()) as stream:
        for _ in stream:
            pass
        mixed = stream.get_final_completion()
    assert mixed.choices[0].message.content == "On it." and mixed.choices[0].finish_reason == "tool_calls"
    assert (mixed.choices[0].message.tool_calls or [])[0].function.parsed_arguments == {"order_id": "o"}
    first = deltas(server.requests[1].events)[0]
    assert first == {"role": "assistant", "content": None, "refusal": ""}


# --------------------------------------------------------------------------- faults


def test_http_error_before_the_stream(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.error(429, retry_after=0), turn.text("ok"))
    with pytest.raises(openai.RateLimitError) as info:
        client(server).chat.completions.create(**params(), stream=True)
    assert info.value.code == "rate_limit_exceeded"
    assert client(server, max_retries=0).chat.completions.create(**params()).choices[0].message.content == "ok"
    rec = server.requests[0]
    assert rec.status == 429 and not rec.streamed and rec.api == "chat"


def test_cut_stream_abort(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("one two three four").cut_after(3))
    got: list[Any] = []
    expected: type[BaseException] = openai.APIConnectionError if OPENAI_MAJOR >= 3 else httpx.RemoteProtocolError
    with pytest.raises(expected):
        for chunk in client(server).chat.completions.create(**params(), stream=True):
            got.append(chunk)
    assert len(got) == 3
    (rec,) = server.requests
    assert len(rec.events) == 3 and not rec.done


def test_cut_stream_eof_and_cap(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Hello there").cut_after(2, mode="eof"), turn.text("Hello there").cut_after(99, mode="eof"))
    c = client(server)
    chunks = list(c.chat.completions.create(**params(), stream=True, stream_options={"include_usage": True}))
    assert [ch.choices[0].delta.content for ch in chunks] == ["", "Hello"]
    with c.chat.completions.stream(**params()) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason is None and final.choices[0].message.content == "Hello there"
    first, second = server.requests
    assert not first.done and not second.done
    # cut after more chunks than there are: still no finish chunk, usage chunk or [DONE]
    assert len(second.events) == 3 and all(e["choices"][0]["finish_reason"] is None for e in second.events)


def test_error_mid_stream_raises_api_error(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("one two three").error_after(2, "Overloaded", code="server_overloaded"))
    got: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client(server).chat.completions.create(**params(), stream=True):
            got.append(chunk)
    assert len(got) == 2 and "Overloaded" in str(info.value)
    assert info.value.body == {"message": "Overloaded", "type": "server_error", "param": None, "code": "server_overloaded"}
    (rec,) = server.requests
    assert rec.events[-1] == {"error": info.value.body} and not rec.done


def test_failed_turn_is_an_http_500(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.failed("boom", code="server_error"), turn.failed("boom"), turn.text("recovered"))
    c = client(server)
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(**params(), stream=True)
    assert info.value.status_code == 500 and info.value.body["message"] == "boom"  # type: ignore[index]
    # 500 is retried by the SDK's default policy: the retry plays the next turn
    assert client(server, max_retries=1).chat.completions.create(**params()).choices[0].message.content == "recovered"
    assert [r.status for r in server.requests] == [500, 500, 200]
    assert server.requests[2].retry_count == 1 and not server.problems


def test_script_problems_on_chat() -> None:
    with ScriptedOpenAI(
        [turn.text("x").cut_after(1), turn.items({"type": "web_search_call", "status": "completed", "action": {}})]
    ) as server:
        c = client(server, max_retries=2)
        with pytest.raises(openai.InternalServerError, match="stream"):
            c.chat.completions.create(**params())
        with pytest.raises(openai.InternalServerError, match="web_search_call"):
            c.chat.completions.create(**params())
        with pytest.raises(openai.InternalServerError, match="script exhausted"):
            c.chat.completions.create(**params())
    assert len(server.requests) == 3  # x-should-retry: false -> never retried
    assert len(server.problems) == 3
    with pytest.raises(AssertionError, match="script problems"):
        server.assert_all_played()


# --------------------------------------------------------------------------- routing and recording


def test_mixed_apis_share_one_script_and_are_told_apart(serve: Callable[..., ScriptedOpenAI]) -> None:
    seen: list[dict[str, Any]] = []

    def react(request: dict[str, Any]) -> ModelTurn:
        seen.append(request)
        return turn.text(f"you said {request['messages'][-1]['content']}")

    server = serve(turn.text("from responses"), react)
    c = client(server)
    assert c.responses.create(model="gpt-5", input="hi").output_text == "from responses"
    assert c.chat.completions.create(**params()).choices[0].message.content == "you said Refund order ord_1 by 10."
    assert [r.api for r in server.requests] == ["responses", "chat"]
    assert seen == [server.requests[1].json]
    server.assert_all_played()


def test_bad_chat_bodies_do_not_consume_turns(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("ok"))
    with httpx.Client(timeout=10) as http:
        no_messages = http.post(server.base_url + "/chat/completions", json={"model": "m"})
        empty = http.post(server.base_url + "/chat/completions", json={"model": "m", "messages": []})
        no_model = http.post(server.base_url + "/chat/completions", json={"messages": MESSAGES})
        not_json = http.post(server.base_url + "/chat/completions", content=b"nope")
        retrieve = http.get(server.base_url + "/chat/completions/chatcmpl-1")
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_array"
    assert not_json.status_code == 400 and retrieve.status_code == 404
    assert [r.api for r in server.requests] == ["chat", "chat", "chat", "chat", None]
    assert len(server.remaining) == 1
    assert client(server).chat.completions.create(**params()).choices[0].message.content == "ok"


def test_renderers_directly() -> None:
    request = {"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}}
    body = render_chat_completion(turn.text("a b"), request, completion_id="chatcmpl-1", created=1)
    chunks, before_finish = chat_chunks(body, request)
    assert before_finish == 3 and len(chunks) == 5
    assert [c["choices"][0]["finish_reason"] for c in chunks[:4]] == [None, None, None, "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    with pytest.raises(ChatRenderError):
        render_chat_completion(turn.items({"type": "image_generation_call"}), request, completion_id="c", created=1)
    combined = turn.text("x").with_chat_fields(a=1) + turn.text("y").streamed(interleave_tool_calls=True)
    assert combined.chat_fields == {"a": 1} and combined.stream.interleave_tool_calls
    assert turn.text("x").streamed(event_delay=0.1).stream.interleave_tool_calls is False
