"""clearance.testing.ScriptedOpenAI driven by the real openai SDK (2.x and 3.x).

Every exchange a test makes is checked on teardown against OpenAI's published spec:
accepted request bodies against ``CreateResponse``, 200 replies to ``POST /responses``
against ``Response``, error replies against ``ErrorResponse``. Clients run with
``_strict_response_validation=True`` so the SDK's own pydantic types check every body.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, AzureOpenAI, OpenAI
from adapter_support import check_wire
from openai_spec import assert_valid, validator
from sdk_support import client

from clearance.testing import ErrorTurn, ModelTurn, RawTurn, ScriptedOpenAI, turn

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
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
    {"type": "function", "name": "lookup_order", "parameters": {"type": "object", "properties": {}}, "strict": None},
]


@pytest.fixture
def wire_check() -> Callable[[ScriptedOpenAI], None]:
    """What ``serve`` (conftest.py) checks at teardown here: the exchanges against the spec; not
    ``problems``, which these tests provoke and assert themselves."""
    return check_wire


def create(c: OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-5.4")
    kwargs.setdefault("input", "Refund order ord_1 by 10.")
    kwargs.setdefault("tools", TOOLS)
    return c.responses.create(**kwargs)


# --------------------------------------------------------------------------- turn kinds


def test_function_call_round_trip(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}))
    resp = create(client(server))
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.status == "completed"
    assert resp.model == "gpt-5.4"
    (item,) = resp.output
    assert item.type == "function_call"
    assert item.name == "refund_payment"
    assert json.loads(item.arguments) == {"order_id": "ord_1", "amount": 10}
    assert item.id.startswith("fc_") and item.call_id.startswith("call_") and item.status == "completed"
    assert resp.output_text == ""
    assert resp.usage.input_tokens_details.cache_write_tokens == 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    # the request's settings are echoed, function tools with strict filled
    assert [t.name for t in resp.tools] == ["refund_payment", "lookup_order"]
    assert [t.strict for t in resp.tools] == [True, True]
    assert resp.tool_choice == "auto" and resp.parallel_tool_calls is True
    assert resp.store is True and resp.previous_response_id is None and resp.metadata == {}
    assert server.remaining == []


def test_parallel_function_calls(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.function_calls(
            [("refund_payment", {"order_id": "a", "amount": 1}), ("lookup_order", {}, "call_fixed")]
        )
    )
    resp = create(client(server), parallel_tool_calls=True)
    assert [(o.type, o.name) for o in resp.output] == [
        ("function_call", "refund_payment"),
        ("function_call", "lookup_order"),
    ]
    assert resp.output[1].call_id == "call_fixed"
    assert len({o.id for o in resp.output}) == 2
    assert resp.output[0].call_id != resp.output[1].call_id


def test_text_round_trip(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("Refunded."))
    resp = create(client(server), tools=[])
    (msg,) = resp.output
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert msg.id.startswith("msg_")
    assert msg.content[0].type == "output_text"
    assert msg.content[0].annotations == [] and msg.content[0].logprobs == []
    assert resp.output_text == "Refunded."
    assert resp.tools == []


def test_refusal_round_trip(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.refusal("I can't help with that."))
    resp = create(client(server))
    part = resp.output[0].content[0]
    assert part.type == "refusal" and part.refusal == "I can't help with that."
    assert resp.output_text == ""


def test_reasoning_then_function_call(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.reasoning("Check the order first.", then=turn.function_call("lookup_order", {})),
        turn.reasoning(["a", "b"], content="raw thoughts", encrypted_content="opaque-blob", then=turn.text("ok")),
    )
    c = client(server)
    resp = create(c, include=["reasoning.encrypted_content"], reasoning={"effort": "low", "summary": "auto"})
    assert [o.type for o in resp.output] == ["reasoning", "function_call"]
    rs = resp.output[0]
    assert rs.id.startswith("rs_")
    assert [s.text for s in rs.summary] == ["Check the order first."]
    assert rs.encrypted_content and isinstance(rs.encrypted_content, str)
    assert resp.reasoning.effort == "low" and resp.reasoning.summary == "auto"
    assert resp.usage.output_tokens_details.reasoning_tokens > 0
    # stateless replay of reasoning + call + output validates as a CreateResponse
    fc = resp.output[1]
    resp2 = create(
        c,
        store=False,
        include=["reasoning.encrypted_content"],
        input=[
            {"role": "user", "content": "Refund order ord_1 by 10."},
            rs.model_dump(exclude_none=True),
            fc.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": fc.call_id, "output": '{"status": "paid"}'},
        ],
    )
    assert resp2.store is False
    assert [s.text for s in resp2.output[0].summary] == ["a", "b"]
    assert resp2.output[0].content[0].text == "raw thoughts"
    assert resp2.output[0].encrypted_content == "opaque-blob"
    assert resp2.output_text == "ok"
    replayed = server.requests[1].json["input"]
    assert replayed[1]["type"] == "reasoning" and replayed[1]["encrypted_content"] == rs.encrypted_content


def test_message_plus_call_and_usage_override(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        (turn.text("Let me check.", phase="commentary") + turn.function_call("lookup_order", {})).with_usage(
            input_tokens=100, output_tokens=7, cached_tokens=64, reasoning_tokens=2
        )
    )
    resp = create(client(server))
    assert [o.type for o in resp.output] == ["message", "function_call"]
    assert resp.output[0].phase == "commentary"
    u = resp.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (100, 7, 107)
    assert u.input_tokens_details.cached_tokens == 64 and u.output_tokens_details.reasoning_tokens == 2


def test_malformed_arguments_are_sent_verbatim(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.raw_function_call("refund_payment", '{"order_id": "ord_1", "amount": '),
        turn.function_calls([("refund_payment", "not json")]),
    )
    c = client(server)
    first = create(c).output[0]
    assert first.arguments == '{"order_id": "ord_1", "amount": '
    with pytest.raises(json.JSONDecodeError):
        json.loads(first.arguments)
    assert create(c).output[0].arguments == "not json"


def test_incomplete_failed_and_custom_items(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.incomplete("max_output_tokens", then=turn.text("Partial", status="incomplete")),
        turn.failed("boom", code="server_error"),
        turn.items(
            {"type": "function_call", "name": "lookup_order", "arguments": "{}", "status": "completed"},
            {"type": "message", "role": "assistant", "status": "completed", "content": []},
        ),
        turn.text("x").with_fields(metadata={"k": "v"}, service_tier="flex"),
    )
    c = client(server)
    inc = create(c)
    assert inc.status == "incomplete" and inc.incomplete_details.reason == "max_output_tokens"
    assert inc.output_text == "Partial"
    failed = create(c)
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.error.message == "boom"
    custom = create(c)
    assert custom.output[0].id.startswith("fc_") and custom.output[0].call_id.startswith("call_")
    assert custom.output[1].id.startswith("msg_")
    tweaked = create(c)
    assert tweaked.metadata == {"k": "v"} and tweaked.service_tier == "flex"


def test_request_settings_are_echoed(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}))
    resp = create(
        client(server),
        model="my-deployment",
        instructions="You are careful.",
        tool_choice={"type": "function", "name": "refund_payment"},
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.5,
        metadata={"run": "42"},
        max_output_tokens=500,
        text={"format": {"type": "text"}, "verbosity": "low"},
        user="u-1",
    )
    assert resp.model == "my-deployment" and resp.instructions == "You are careful."
    assert resp.tool_choice.type == "function" and resp.tool_choice.name == "refund_payment"
    assert resp.parallel_tool_calls is False
    assert (resp.temperature, resp.top_p, resp.max_output_tokens) == (0.2, 0.5, 500)
    assert resp.metadata == {"run": "42"} and resp.text.verbosity == "low" and resp.user == "u-1"


def test_async_client_round_trip(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}),
        turn.text("Refunded."),
        turn.error(429, retry_after=1),
    )

    async def run() -> tuple[Any, Any]:
        async with AsyncOpenAI(
            base_url=server.base_url, api_key="test", max_retries=0, _strict_response_validation=True
        ) as c:
            first = await c.responses.create(model="gpt-5.4", input="refund", tools=TOOLS)
            second = await c.responses.create(
                model="gpt-5.4",
                previous_response_id=first.id,
                input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "ok"}],
                tools=TOOLS,
            )
            with pytest.raises(openai.RateLimitError):
                await c.responses.create(model="gpt-5.4", input="again")
            return first, second

    first, second = asyncio.run(run())
    assert first.output[0].type == "function_call"
    assert second.output_text == "Refunded." and second.previous_response_id == first.id


# --------------------------------------------------------------------------- recording


def test_requests_are_recorded(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.function_call("lookup_order", {}), turn.text("done"))
    c = client(server)
    first = create(c, tool_choice="required", store=True)
    create(
        c,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "{}"}],
    )
    r0, r1 = server.requests
    assert (r0.method, r0.path, r0.query) == ("POST", "/v1/responses", {})
    assert r0.headers["authorization"] == "Bearer test"
    assert r0.headers["content-type"] == "application/json"
    assert all(k == k.lower() for k in r0.headers)
    assert r0.retry_count == 0 and "x-stainless-retry-count" in r0.headers
    assert r0.json == {
        "model": "gpt-5.4",
        "input": "Refund order ord_1 by 10.",
        "tools": TOOLS,
        "tool_choice": "required",
        "store": True,
    }
    assert json.loads(r0.body) == r0.json
    assert r0.status == 200 and r0.response["id"] == first.id and r0.turn is not None
    assert r1.json["input"][0]["type"] == "function_call_output"
    assert r1.json["previous_response_id"] == first.id
    assert r0.problem is None and server.problems == []
    server.assert_all_played()


def test_sdk_request_bodies_validate_against_create_response(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("ok"), turn.text("ok"))
    c = client(server)
    create(
        c,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "call_1", "name": "lookup_order", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
        ],
        tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "lookup_order"}]},
        text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        truncation="auto",
        reasoning={"effort": "medium"},
    )
    create(c, input="plain string", tools=[], store=False, metadata={"a": "b"})
    for rec in server.requests:
        assert validator("CreateResponse").is_valid(rec.json)
    assert_valid("Response", server.requests[0].response)


# --------------------------------------------------------------------------- errors and retries


def test_errors_map_to_sdk_exceptions(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.error(500),
        turn.error(429, retry_after=1),
        turn.error(400, message="Invalid 'input': too long.", param="input", code="invalid_value"),
        turn.error(401),
        turn.error(404, message="Model not found"),
        turn.error(503, should_retry=False, headers={"x-custom": "1"}),
    )
    c = client(server)
    with pytest.raises(openai.InternalServerError) as e500:
        create(c)
    assert e500.value.status_code == 500 and e500.value.type == "server_error"
    assert e500.value.request_id and e500.value.request_id.startswith("req_")
    with pytest.raises(openai.RateLimitError) as e429:
        create(c)
    assert e429.value.code == "rate_limit_exceeded" and e429.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.BadRequestError) as e400:
        create(c)
    assert e400.value.param == "input" and e400.value.code == "invalid_value"
    assert e400.value.body["message"] == "Invalid 'input': too long."
    assert e400.value.type == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        create(c)
    with pytest.raises(openai.NotFoundError):
        create(c)
    with pytest.raises(openai.InternalServerError) as e503:
        create(c)
    assert e503.value.response.headers["x-should-retry"] == "false"
    assert e503.value.response.headers["x-custom"] == "1"
    assert [r.status for r in server.requests] == [500, 429, 400, 401, 404, 503]
    assert all(isinstance(r.turn, ErrorTurn) for r in server.requests)


def test_500_then_success_is_retried(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.error(500), turn.text("recovered"))
    resp = create(client(server, max_retries=2))
    assert resp.output_text == "recovered"
    assert [r.status for r in server.requests] == [500, 200]
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]
    assert [r.retry_count for r in server.requests] == [0, 1]


def test_retry_after_is_honoured(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.error(429, retry_after=1), turn.text("ok"))
    start = time.monotonic()
    resp = create(client(server, max_retries=1))
    elapsed = time.monotonic() - start
    assert resp.output_text == "ok"
    assert elapsed >= 0.9, elapsed
    gap = server.requests[1].received_at - server.requests[0].received_at
    assert gap >= 0.9, gap


def test_exhausted_script_is_a_500_that_is_not_retried(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("only one"))
    c = client(server, max_retries=2)
    create(c)
    with pytest.raises(openai.InternalServerError) as exc:
        create(c)
    assert exc.value.code == "script_exhausted"
    assert "script exhausted" in exc.value.body["message"]
    assert len(server.requests) == 2  # x-should-retry: false stops the SDK's retries
    assert server.requests[1].status == 500 and server.requests[1].problem
    assert len(server.problems) == 1
    with pytest.raises(AssertionError, match="script exhausted"):
        server.assert_all_played()


def test_assert_all_played_reports_unplayed_turns(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("a"), turn.text("b"))
    create(client(server))
    assert len(server.remaining) == 1
    with pytest.raises(AssertionError, match="never played"):
        server.assert_all_played()


# --------------------------------------------------------------------------- state


def test_previous_response_id_chaining(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.function_call("lookup_order", {}), turn.text("one"), turn.text("two"), turn.text("three"))
    c = client(server)
    first = create(c)
    second = create(
        c,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "{}"}],
    )
    assert second.previous_response_id == first.id and second.output_text == "one"
    third = create(c, previous_response_id=second.id, input="more", store=False)
    assert third.output_text == "two" and third.store is False
    # store=False responses are not kept: chaining on them is a 400, like OpenAI
    with pytest.raises(openai.BadRequestError) as exc:
        create(c, previous_response_id=third.id, input="again")
    assert exc.value.param == "previous_response_id"
    assert exc.value.body["message"] == f"Previous response with id '{third.id}' not found."
    with pytest.raises(openai.BadRequestError, match="not found"):
        create(c, previous_response_id="resp_unknown", input="again")
    # rejected requests did not consume the remaining turn
    assert len(server.remaining) == 1
    assert set(server.stored_responses) == {first.id, second.id}


def test_retrieve_and_delete_stored_response(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("kept"))
    c = client(server)
    created = create(c)
    got = c.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == "kept"
    c.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(created.id)
    assert [(r.method, r.status) for r in server.requests] == [("POST", 200), ("GET", 200), ("DELETE", 200), ("GET", 404)]


def test_callable_turns_react_to_the_request(serve: Callable[..., ScriptedOpenAI]) -> None:
    def answer(request: dict[str, Any]) -> ModelTurn:
        outputs = [i["output"] for i in request["input"] if i.get("type") == "function_call_output"]
        return turn.text(f"tool said {outputs[0]}")

    def broken(request: dict[str, Any]) -> ModelTurn:
        raise RuntimeError("script bug")

    server = serve(turn.function_call("lookup_order", {}), answer, broken)
    c = client(server, max_retries=2)
    first = create(c)
    second = create(
        c,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "paid"}],
    )
    assert second.output_text == "tool said paid"
    with pytest.raises(openai.InternalServerError) as exc:
        create(c)
    assert exc.value.code == "script_error" and "script bug" in exc.value.body["message"]
    assert len(server.requests) == 3 and "script bug" in server.problems[0]


def test_bad_bodies_and_unknown_paths(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("unused"))
    c = client(server)
    with pytest.raises(openai.BadRequestError, match="model"):
        c.post("/responses", cast_to=object, body={"input": "no model"})
    with pytest.raises(openai.NotFoundError) as exc:  # (chat/completions is served since; see test_testing_chat.py)
        c.post("/embeddings", cast_to=object, body={"model": "m", "input": "x"})
    assert exc.value.body["message"] == "Invalid URL (POST /v1/embeddings)"
    assert [r.status for r in server.requests] == [400, 404]
    assert len(server.remaining) == 1


# --------------------------------------------------------------------------- transport


def test_delay_and_client_timeout(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("slow", delay_seconds=0.3), turn.text("too slow").delayed(2), turn.text("after"))
    c = client(server)
    start = time.monotonic()
    assert create(c).output_text == "slow"
    assert time.monotonic() - start >= 0.3
    with pytest.raises(openai.APITimeoutError):
        create(c, timeout=0.2)
    assert create(c).output_text == "after"  # the timed-out turn was consumed


def test_raw_turn_sends_anything(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.raw({"id": "resp_1", "object": "response"}),
        turn.raw("<html>bad gateway</html>", status=502, content_type="text/html"),
    )
    c = client(server)
    with pytest.raises(openai.APIResponseValidationError):
        create(c)
    with pytest.raises(openai.InternalServerError):
        create(c)
    assert isinstance(server.requests[0].turn, RawTurn) and server.requests[1].status == 502


def test_azure_style_paths(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("classic"), turn.text("v1"))
    azure = AzureOpenAI(
        azure_endpoint=server.url, api_key="azkey", api_version="2025-04-01-preview", max_retries=0,
        _strict_response_validation=True,
    )
    assert azure.responses.create(model="my-deployment", input="hi").output_text == "classic"
    v1 = OpenAI(base_url=server.url + "/openai/v1", api_key="tok", max_retries=0, _strict_response_validation=True)
    assert v1.responses.create(model="my-deployment", input="hi").output_text == "v1"
    classic, modern = server.requests
    assert classic.path == "/openai/responses" and classic.query == {"api-version": "2025-04-01-preview"}
    assert classic.headers["api-key"] == "azkey"
    assert modern.path == "/openai/v1/responses" and modern.headers["authorization"] == "Bearer tok"


def test_concurrent_requests_each_get_one_turn(serve: Callable[..., ScriptedOpenAI]) -> None:
    n = 8
    server = serve(*[turn.text(f"t{i}", delay_seconds=0.05) for i in range(n)])
    c = client(server)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        text = create(c).output_text
        with lock:
            results.append(text)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == sorted(f"t{i}" for i in range(n))
    server.assert_all_played()


def test_lifecycle_and_helpers() -> None:
    server = ScriptedOpenAI([turn.text("a")])
    assert not server.running
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    with server:
        assert server.running and server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.client(max_retries=0).responses.create(model="m", input="x").output_text == "a"
        server.add(turn.text("b"))

        async def run() -> str:
            async with server.async_client(max_retries=0) as c:
                return (await c.responses.create(model="m", input="x")).output_text

        assert asyncio.run(run()) == "b"
    assert not server.running
    server.stop()  # idempotent
    check_wire(server)
    with pytest.raises(TypeError):
        server.add("not a turn")  # type: ignore[arg-type]


def test_turn_factory_validation() -> None:
    with pytest.raises(TypeError):
        turn.function_call("f", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        turn.function_calls([])
    with pytest.raises(ValueError):
        turn.error(200)
    with pytest.raises(ValueError):
        turn.text("x").delayed(-1)
    e = turn.error(429)
    assert e.envelope() == {
        "error": {
            "message": "Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert turn.error(418).type == "invalid_request_error" and turn.error(599).type == "server_error"
    assert turn.error(500, code="x").code == "x" and turn.error(500, code=None).code is None
    combined = turn.text("a", delay_seconds=0.1) + turn.function_call("f", delay_seconds=0.2)
    assert len(combined.items) == 2 and combined.delay_seconds == pytest.approx(0.3)


def test_spec_helper_reports_errors() -> None:
    good = {"error": {"message": "m", "type": "t", "param": None, "code": None}}
    assert_valid("ErrorResponse", good)
    with pytest.raises(AssertionError, match="'code' is a required property"):
        assert_valid("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None}})
    # the usage detail OpenAI's SDK also requires: cache_write_tokens
    from clearance.testing.responses import render_response

    body = render_response(turn.text("x"), {"model": "m", "input": "hi"}, response_id="resp_1", created_at=1)
    assert_valid("Response", body)
    del body["usage"]["input_tokens_details"]["cache_write_tokens"]
    with pytest.raises(AssertionError, match="cache_write_tokens"):
        assert_valid("Response", body)
    with pytest.raises(KeyError):
        validator("NoSuchSchema")
