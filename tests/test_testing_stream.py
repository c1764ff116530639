"""clearance.testing.ScriptedOpenAI streaming (SSE), driven by the real openai SDK (2.x and 3.x).

Every stream a test makes is checked on teardown: each emitted event against the spec's
``ResponseStreamEvent`` (``strict_one_of=True``), sequence numbers 0, 1, 2, ..., and the
recorded final ``Response`` against ``Response``; plus the usual request/reply checks
(``adapter_support.check_wire``). Clients run with ``_strict_response_validation=True`` so
the SDK's pydantic types check every event too.

Cut-off streams, as observed (and asserted below):

- ``mode="abort"`` (connection dropped inside the chunked body): openai 3.x raises
  ``openai.APIConnectionError`` from the iteration; openai 2.x lets the transport error
  through unwrapped: ``httpx.RemoteProtocolError`` ("peer closed connection without sending
  complete message body (incomplete chunked read)"), which is NOT an ``openai.OpenAIError``.
  Neither retries.
- ``mode="eof"`` (body ends cleanly, no terminal event): both majors end the iteration
  silently; ``responses.stream(...).get_final_response()`` raises
  ``RuntimeError("Didn't receive a `response.completed` event.")``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from adapter_support import check_wire
from openai_spec import assert_valid, validator
from sdk_support import aclient, client

from clearance.testing import ModelTurn, ScriptedOpenAI, StreamError, StreamOptions, turn
from clearance.testing.stream import argument_chunks, encode_event, response_events, text_chunks

OPENAI_MAJOR = int(openai.__version__.split(".")[0])

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "refund_payment",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id", "amount"],
            "additionalProperties": False,
        },
        "strict": True,
    },
    {"type": "function", "name": "lookup_order", "parameters": {"type": "object", "properties": {}}, "strict": False},
]

TEXT_ONLY = ["response.created", "response.in_progress"]
MESSAGE_START = ["response.output_item.added", "response.content_part.added"]
MESSAGE_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def check_stream(rec: Any) -> None:
    """Each event validates against ResponseStreamEvent; sequence numbers count from 0."""
    assert rec.events is not None
    assert [e["sequence_number"] for e in rec.events] == list(range(len(rec.events)))
    shape = rec.turn.stream.error.shape if isinstance(rec.turn, ModelTurn) and rec.turn.stream.error else None
    for event in rec.events:
        if event["type"] == "error" and shape == "production":
            continue  # the nested shape is not the spec's (asserted in its own test)
        assert_valid("ResponseStreamEvent", event, strict_one_of=True)
    assert_valid("Response", rec.response, strict_one_of=True)


@pytest.fixture
def wire_check() -> Callable[[ScriptedOpenAI], None]:
    """What ``serve`` (conftest.py) checks at teardown here: the exchanges, and each stream."""

    def check(server: ScriptedOpenAI) -> None:
        check_wire(server)
        for rec in server.requests:
            if rec.streamed:
                check_stream(rec)

    return check


def params(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("model", "gpt-5.4")
    kwargs.setdefault("input", "Refund order ord_1 by 10.")
    kwargs.setdefault("tools", TOOLS)
    return kwargs


def types(events: list[Any]) -> list[str]:
    return [e["type"] if isinstance(e, dict) else e.type for e in events]


# --------------------------------------------------------------------------- raw create(stream=True)


def test_create_stream_yields_typed_events_in_order(serve: Callable[..., ScriptedOpenAI]) -> None:
    text = "Refunded order ord_1 by 10."
    server = serve(turn.text(text))
    with client(server).responses.create(**params(), stream=True) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["x-request-id"].startswith("req_")
        events = list(stream)
    words = text_chunks(text)
    assert len(words) == 5
    assert types(events) == [
        *TEXT_ONLY,
        *MESSAGE_START,
        *["response.output_text.delta"] * len(words),
        *MESSAGE_END,
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, in_progress, added, part_added, *deltas = events[: 4 + len(words)]
    assert created.response.status == "in_progress" and created.response.output == []
    assert created.response.usage is None and in_progress.response.id == created.response.id
    assert added.output_index == 0 and added.item.type == "message"
    assert added.item.status == "in_progress" and added.item.content == []
    assert part_added.part.type == "output_text" and part_added.part.text == ""
    item_id = added.item.id
    assert [(d.item_id, d.output_index, d.content_index, d.logprobs) for d in deltas] == [(item_id, 0, 0, [])] * 5
    assert "".join(d.delta for d in deltas) == text
    text_done, part_done, item_done, completed = events[-4:]
    assert text_done.text == text and part_done.part.text == text
    assert item_done.item.status == "completed" and item_done.item.id == item_id
    final = completed.response
    assert final.id == created.response.id and final.status == "completed" and final.output_text == text
    assert final.usage is not None and final.usage.total_tokens > 0
    (rec,) = server.requests
    assert rec.json["stream"] is True and rec.status == 200
    assert rec.response["id"] == final.id and rec.response["status"] == "completed"
    assert [e.model_dump(mode="json", exclude_unset=True) for e in events] == rec.events
    assert rec.events[-1]["response"] == rec.response  # the same object the non-stream path renders


def test_wire_format_is_named_sse_frames(serve: Callable[..., ScriptedOpenAI]) -> None:
    import urllib.request

    server = serve(turn.text("Hi there"))
    request = urllib.request.Request(
        server.base_url + "/responses",
        data=json.dumps({"model": "m", "input": "hi", "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
        assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert reply.headers["Transfer-Encoding"] == "chunked"
        body = reply.read().decode()
    frames = body.split("\n\n")
    assert frames[-1] == ""  # every frame ends with a blank line
    (rec,) = server.requests
    assert [f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}" for e in rec.events] == frames[:-1]
    assert body.encode() == b"".join(encode_event(e) for e in rec.events)


# --------------------------------------------------------------------------- responses.stream() helper


def test_stream_helper_text_turn(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Refund done for ord_1."))
    with client(server).responses.stream(**params()) as stream:
        events = list(stream)
        final = stream.get_final_response()
    snapshots = [e.snapshot for e in events if e.type == "response.output_text.delta"]
    assert snapshots == ["Refund", "Refund done", "Refund done for", "Refund done for ord_1."]
    assert final.output_text == "Refund done for ord_1." and final.status == "completed"
    assert final.id == server.requests[0].response["id"]


def test_stream_helper_function_call_turn(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}))
    with client(server).responses.stream(**params()) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert types(events)[:3] == [*TEXT_ONLY, "response.output_item.added"]
    added = events[2]
    assert added.item.type == "function_call" and added.item.arguments == "" and added.item.status == "in_progress"
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    arguments = '{"order_id":"ord_1","amount":10}'
    assert len(deltas) == len(argument_chunks(arguments)) > 3
    assert deltas[-1].snapshot == arguments and "".join(d.delta for d in deltas) == arguments
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == arguments and done.item_id == added.item.id
    assert server.requests[0].events[done.sequence_number]["name"] == "refund_payment"
    (call,) = final.output
    assert call.type == "function_call" and call.name == "refund_payment" and call.status == "completed"
    assert json.loads(call.arguments) == {"order_id": "ord_1", "amount": 10}
    assert call.call_id == added.item.call_id and call.id == added.item.id
    assert call.parsed_arguments == {"order_id": "ord_1", "amount": 10}  # strict tool: the helper parses


def test_stream_helper_parallel_calls(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.function_calls([("refund_payment", {"order_id": "a", "amount": 1}), ("lookup_order", {}, "call_2")])
    )
    with client(server).responses.stream(**params(parallel_tool_calls=True)) as stream:
        events = list(stream)
        final = stream.get_final_response()
    added = [(e.output_index, e.item.name) for e in events if e.type == "response.output_item.added"]
    assert added == [(0, "refund_payment"), (1, "lookup_order")]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert done == [0, 1]
    # item 0 is finished before item 1 starts
    kinds = types(events)
    assert kinds.index("response.output_item.done") < [i for i, k in enumerate(kinds) if k.endswith(".added")][1]
    assert [(o.name, o.arguments) for o in final.output] == [
        ("refund_payment", '{"order_id":"a","amount":1}'),
        ("lookup_order", "{}"),
    ]
    assert final.output[1].call_id == "call_2"


def test_stream_helper_reasoning_then_call(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.reasoning(
            ["Check the order.", "Then refund."],
            content="The user wants a refund.",
            then=turn.function_call("refund_payment", {"order_id": "o", "amount": 2}),
        )
    )
    with client(server).responses.stream(**params()) as stream:
        events = list(stream)
        final = stream.get_final_response()
    reasoning = [e for e in events if getattr(e, "output_index", None) == 0]
    summary_part = [
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ]
    assert types(reasoning) == [
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * 5,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * 3,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        *summary_part,
        "response.output_item.done",
    ]
    assert reasoning[0].item.type == "reasoning" and reasoning[0].item.summary == []
    texts = [e.text for e in reasoning if e.type == "response.reasoning_summary_text.done"]
    assert texts == ["Check the order.", "Then refund."]
    assert [e.summary_index for e in reasoning if e.type.startswith("response.reasoning_summary_part")] == [0, 0, 1, 1]
    assert reasoning[-1].item.encrypted_content == final.output[0].encrypted_content
    assert [o.type for o in final.output] == ["reasoning", "function_call"]
    assert final.output[0].summary[1].text == "Then refund."
    assert final.output[1].name == "refund_payment"


def test_stream_helper_refusal(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.refusal("I can't help with that."))
    with client(server).responses.stream(**params()) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert types(events) == [
        *TEXT_ONLY,
        *MESSAGE_START,
        *["response.refusal.delta"] * 5,
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[3].part.type == "refusal" and events[3].part.refusal == ""
    assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == "I can't help with that."
    assert final.output[0].content[0].type == "refusal"
    assert final.output[0].content[0].refusal == "I can't help with that." and final.output_text == ""


def test_stream_helper_message_then_call_with_annotations(serve: Callable[..., ScriptedOpenAI]) -> None:
    citation = {"type": "url_citation", "url": "https://example.com", "title": "Ex", "start_index": 0, "end_index": 4}
    server = serve(turn.text("Look here.", annotations=[citation]) + turn.function_call("lookup_order", {}))
    with client(server).responses.stream(**params()) as stream:
        events = list(stream)
        final = stream.get_final_response()
    (annotation,) = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert annotation.annotation_index == 0 and annotation.output_index == 0
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output_text == "Look here." and final.output[0].content[0].annotations[0].url == "https://example.com"


def test_async_client_streams(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Hello async world"), turn.function_call("lookup_order", {"q": 1}))

    async def run() -> tuple[list[Any], Any]:
        async with aclient(server) as c:
            raw = [e async for e in await c.responses.create(**params(), stream=True)]
            async with c.responses.stream(**params()) as stream:
                async for _ in stream:
                    pass
                final = await stream.get_final_response()
        return raw, final

    raw, final = asyncio.run(run())
    assert types(raw)[-1] == "response.completed" and raw[-1].response.output_text == "Hello async world"
    assert [e.sequence_number for e in raw] == list(range(len(raw)))
    assert final.output[0].name == "lookup_order" and final.output[0].arguments == '{"q":1}'


# --------------------------------------------------------------------------- spec validity of every event


def test_every_event_validates_against_the_spec() -> None:
    validator("ResponseStreamEvent")  # skip (or fail under CI) when the spec is absent
    citation = {"type": "url_citation", "url": "https://e.com", "title": "E", "start_index": 0, "end_index": 1}
    turns = [
        turn.text("Hello there", annotations=[citation]),
        turn.text("") + turn.refusal("No."),
        turn.reasoning("sum", content="raw thoughts", then=turn.function_calls([("a", {"x": [1, 2]}), ("b", "{")])),
        turn.reasoning(None, encrypted_content=None),
        turn.items(
            {"type": "message", "role": "assistant", "status": "completed", "content": []},
            {"type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "q"}},
        ),
        turn.incomplete(then=turn.text("Hel", status="incomplete")),
        turn.failed("boom"),
    ]
    seen: set[str] = set()
    for t in turns:
        request = {"model": "m", "input": "hi", "stream": True}
        from clearance.testing.responses import render_response

        body = render_response(t, request, response_id="resp_1", created_at=1)
        events = response_events(body)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        for event in events:
            assert_valid("ResponseStreamEvent", event, strict_one_of=True)
            seen.add(event["type"])
        assert events[-1]["response"] == body
    error = StreamError().event(7)
    assert_valid("ResponseStreamEvent", error, strict_one_of=True)
    assert_valid("ResponseStreamEvent", StreamError(shape="spec").event(7), strict_one_of=True)
    assert seen >= {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.annotation.added",
        "response.output_text.done",
        "response.refusal.delta",
        "response.refusal.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }


def test_chunkers_round_trip() -> None:
    for s in ["", " ", "a", "  lead and trail  ", "multi\n\nline\ttext\n", "naïve – ünïcode 👍"]:
        assert "".join(text_chunks(s)) == s
        assert "".join(argument_chunks(s)) == s
    for s in ['{"order_id":"ord_1","amount":10}', '{"x": ', '{"q":"a \\" b"}', "[]"]:
        assert "".join(argument_chunks(s)) == s
    assert argument_chunks('{"order_id":"o"}') == ['{"', "order_id", '":"', "o", '"}']
    assert text_chunks("Hi there, you") == ["Hi", " there,", " you"]


# --------------------------------------------------------------------------- faults


def test_cut_stream_abort(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.stream_cut(after=4, then=turn.text("one two three four")))
    received: list[Any] = []
    expected: type[BaseException]
    if OPENAI_MAJOR >= 3:
        expected = openai.APIConnectionError
    else:
        import httpx

        expected = httpx.RemoteProtocolError  # 2.x does not wrap it in an openai exception
    with pytest.raises(expected) as exc_info:
        for event in client(server, max_retries=2).responses.create(**params(), stream=True):
            received.append(event)
    if OPENAI_MAJOR < 3:
        assert "incomplete chunked read" in str(exc_info.value)
        assert not isinstance(exc_info.value, openai.OpenAIError)
    assert types(received) == [*TEXT_ONLY, *MESSAGE_START]
    (rec,) = server.requests  # mid-stream failures are never retried
    assert types(rec.events) == types(received)
    assert rec.response["status"] == "completed"  # what the stream would have delivered
    assert server.stored_responses == {}  # a cut stream stores nothing


def test_cut_stream_abort_in_the_helper(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("one two three").cut_after(5))
    c = client(server)
    error = openai.APIConnectionError if OPENAI_MAJOR >= 3 else __import__("httpx").RemoteProtocolError
    with pytest.raises(error):
        with c.responses.stream(**params()) as stream:
            for _ in stream:
                pass
    assert len(server.requests[0].events) == 5


def test_cut_stream_eof_ends_iteration_silently(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.text("one two three").cut_after(3, mode="eof"),
        turn.function_call("lookup_order", {"q": "x"}).cut_after(4, mode="eof"),
        turn.text("after"),
    )
    c = client(server)
    events = list(c.responses.create(**params(), stream=True))  # no exception on either major
    assert types(events) == [*TEXT_ONLY, "response.output_item.added"]
    with c.responses.stream(**params()) as stream:
        events = list(stream)
        assert types(events)[-1] == "response.function_call_arguments.delta"
        with pytest.raises(RuntimeError, match="Didn't receive a `response.completed` event"):
            stream.get_final_response()
    # the connection is reusable after a clean end
    assert c.responses.create(**params()).output_text == "after"


def test_cut_after_more_events_than_the_stream_has_still_omits_the_terminal_event(
    serve: Callable[..., ScriptedOpenAI],
) -> None:
    server = serve(turn.text("a b").cut_after(1000, mode="eof"))
    events = list(client(server).responses.create(**params(), stream=True))
    assert types(events) == [*TEXT_ONLY, *MESSAGE_START, "response.output_text.delta", "response.output_text.delta",
                             *MESSAGE_END]


def test_error_event_raises_api_error(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.stream_error("The server is overloaded.", code="server_error", after=3, then=turn.text("a b c")),
        turn.text("x").error_after(0, "Rate limited.", code="rate_limit_exceeded", type="tokens"),
    )
    c = client(server, max_retries=2)
    received: list[Any] = []
    with pytest.raises(openai.APIError) as exc_info:
        for event in c.responses.create(**params(), stream=True):
            received.append(event)
    exc = exc_info.value
    assert not isinstance(exc, openai.APIStatusError)  # raised from the stream, not an HTTP status
    assert exc.message == "The server is overloaded." and exc.code == "server_error"
    assert exc.body == {"type": "server_error", "code": "server_error", "message": "The server is overloaded.",
                        "param": None}
    assert types(received) == [*TEXT_ONLY, "response.output_item.added"]
    error = server.requests[0].events[-1]
    assert error == {
        "type": "error",
        "code": "server_error",
        "message": "The server is overloaded.",
        "param": None,
        "sequence_number": 3,
        "error": exc.body,
    }
    with pytest.raises(openai.APIError) as exc_info:
        with c.responses.stream(**params()) as stream:
            list(stream)
    assert exc_info.value.code == "rate_limit_exceeded" and exc_info.value.body["type"] == "tokens"
    assert [len(r.events) for r in server.requests] == [4, 1]  # not retried
    assert server.stored_responses == {}


def test_error_event_shapes(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.stream_error("Spec shaped.", code=None, after=2, shape="spec"),
        turn.stream_error("Live shaped.", code="server_error", after=2, shape="production"),
    )
    c = client(server)
    # the documented shape is yielded as an event, not raised, and the iteration then ends
    events = list(c.responses.create(**params(), stream=True))
    assert types(events) == [*TEXT_ONLY, "error"]
    assert events[-1].message == "Spec shaped." and events[-1].code is None and events[-1].sequence_number == 2
    with pytest.raises(openai.APIError, match="Live shaped."):
        list(c.responses.create(**params(), stream=True))
    nested = server.requests[1].events[-1]
    assert nested == {
        "type": "error",
        "sequence_number": 2,
        "error": {"type": "server_error", "code": "server_error", "message": "Live shaped.", "param": None},
    }
    assert not validator("ResponseStreamEvent").is_valid(nested)  # what the live API sends is off-spec


def test_failed_and_incomplete_arrive_as_events(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.failed("The model crashed.", code="server_error"),
        turn.incomplete("max_output_tokens", then=turn.text("Partial answ", status="incomplete")),
        turn.failed("Again."),
    )
    c = client(server)
    events = list(c.responses.create(**params(), stream=True))
    assert types(events) == [*TEXT_ONLY, "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert failed.error.message == "The model crashed."
    events = list(c.responses.create(**params(), stream=True))
    assert types(events)[-1] == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output_text == "Partial answ"
    with c.responses.stream(**params()) as stream:
        assert types(list(stream))[-1] == "response.failed"
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    # failed/incomplete responses are stored like non-streamed ones
    assert len(server.stored_responses) == 3


def test_429_before_the_stream_starts(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.error(429, retry_after=1),
        turn.error(429, retry_after_ms=10),
        turn.text("Recovered after a retry."),
    )
    with pytest.raises(openai.RateLimitError) as exc_info:
        client(server).responses.create(**params(), stream=True)
    assert exc_info.value.response.headers["retry-after"] == "1"
    assert exc_info.value.code == "rate_limit_exceeded"
    with client(server, max_retries=1).responses.stream(**params()) as stream:
        final = stream.get_final_response()
    assert final.output_text == "Recovered after a retry."
    assert [(r.status, r.retry_count, r.streamed) for r in server.requests] == [
        (429, 0, False),
        (429, 0, False),
        (200, 1, True),
    ]


def test_fault_turn_on_a_non_streaming_request_is_a_script_problem() -> None:
    with ScriptedOpenAI([turn.text("x").cut_after(2)]) as server:
        with pytest.raises(openai.InternalServerError) as exc_info:
            client(server, max_retries=2).responses.create(**params())
        assert exc_info.value.response.headers["x-should-retry"] == "false"
        (problem,) = server.problems
        assert "cut_after/error_after" in problem and len(server.requests) == 1


# --------------------------------------------------------------------------- storage, chaining, timing


def test_streamed_responses_are_stored_and_chain(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.function_call("refund_payment", {"order_id": "o", "amount": 1}, call_id="call_1"),
        turn.text("Done."),
        turn.text("Not kept."),
    )
    c = client(server)
    with c.responses.stream(**params()) as stream:
        first = stream.get_final_response()
    assert c.responses.retrieve(first.id).output[0].call_id == "call_1"
    chained = list(
        c.responses.create(
            **params(
                previous_response_id=first.id,
                input=[{"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'}],
            ),
            stream=True,
        )
    )
    second = chained[-1].response
    assert second.previous_response_id == first.id and second.output_text == "Done."
    unstored = list(c.responses.create(**params(store=False), stream=True))[-1].response
    assert unstored.store is False
    assert set(server.stored_responses) == {first.id, second.id}
    with pytest.raises(openai.BadRequestError):
        c.responses.create(**params(previous_response_id=unstored.id), stream=True)


def test_response_is_stored_before_the_terminal_event_is_written(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("a").streamed(event_delay=0.05))
    for event in client(server).responses.create(**params(), stream=True):
        stored = event.response.id in server.stored_responses if hasattr(event, "response") else None
        if event.type == "response.in_progress":
            assert stored is False
        if event.type == "response.completed":
            assert stored is True


def test_delay_before_first_byte_and_between_events(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("one two three four five six").delayed(0.2).streamed(event_delay=0.05))
    started = time.perf_counter()
    arrivals: list[float] = []
    with client(server).responses.create(**params(), stream=True) as stream:
        opened = time.perf_counter() - started  # headers arrive after delay_seconds
        for _ in stream:
            arrivals.append(time.perf_counter() - started)
    assert opened >= 0.2
    assert len(arrivals) == 14
    # the first event comes right after the headers (no event_delay before it), the rest
    # one by one as they are written
    assert arrivals[0] - opened < 0.05
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= 0.025  # client-side jitter aside, no two events arrive together
    assert arrivals[-1] - arrivals[0] >= 13 * 0.05


def test_deltas_arrive_as_they_are_written(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("w " * 10).streamed(event_delay=0.03))
    seen_server_side: list[int] = []
    with client(server).responses.create(**params(), stream=True) as stream:
        for _event in stream:
            seen_server_side.append(len(server.requests[0].events or []))
    # when the client holds event i, the server has written about i+1 events, not the whole stream
    total = len(server.requests[0].events)
    assert all(n <= i + 2 for i, n in enumerate(seen_server_side)), seen_server_side
    assert seen_server_side[0] < total


def test_callable_turns_and_raw_sse_turns_stream(serve: Callable[..., ScriptedOpenAI]) -> None:
    hand_written = b"".join(
        encode_event(e)
        for e in [
            {"type": "response.created", "response": {**_min_response(), "status": "in_progress"}, "sequence_number": 0},
            {"type": "response.completed", "response": _min_response(), "sequence_number": 1},
        ]
    )
    server = serve(
        lambda req: turn.text(f"stream={req.get('stream')}"),
        turn.raw(hand_written, content_type="text/event-stream"),
    )
    c = client(server)
    assert list(c.responses.create(**params(), stream=True))[-1].response.output_text == "stream=True"
    events = list(c.responses.create(**params(), stream=True))
    assert types(events) == ["response.created", "response.completed"] and events[-1].response.id == "resp_raw"
    assert server.requests[1].events is None  # a raw reply is recorded as sent, not as events


def _min_response() -> dict[str, Any]:
    from clearance.testing.responses import render_response

    return render_response(turn.text("raw"), {"model": "m"}, response_id="resp_raw", created_at=1)


# --------------------------------------------------------------------------- turn options


def test_stream_options_compose() -> None:
    t = turn.text("a").streamed(event_delay=0.01) + turn.function_call("f").cut_after(3, mode="eof")
    assert t.stream == StreamOptions(event_delay=0.01, cut_after=3, cut_mode="eof")
    assert t.stream.faulty and not turn.text("a").streamed(event_delay=1).stream.faulty
    e = turn.stream_error("m", code="c", after=1, then=turn.text("a")).delayed(0.5)
    assert e.stream.error == StreamError(message="m", code="c") and e.stream.error_after == 1
    assert e.delay_seconds == 0.5 and e.items[0]["type"] == "message"
    assert turn.incomplete(then=turn.text("a").cut_after(2)).stream.cut_after == 2
    with pytest.raises(ValueError):
        turn.text("a").cut_after(-1)
    with pytest.raises(ValueError):
        turn.text("a").cut_after(1, mode="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        turn.text("a").streamed(event_delay=-1)
    with pytest.raises(ValueError):
        turn.stream_error(shape="xml")
