"""Azure OpenAI URL forms against clearance.testing.ScriptedOpenAI, with the real openai SDK (2.x and 3.x).

What the SDK sends, as observed here on both SDK lines (and asserted below):

- ``AzureOpenAI(azure_endpoint=E, api_version=V, api_key=K)``: chat ->
  ``POST E/openai/deployments/{model}/chat/completions?api-version=V``; responses ->
  ``POST E/openai/responses?api-version=V`` (Responses is not deployment-scoped); header
  ``api-key: K`` and no ``Authorization``.
- ``azure_deployment="dep"`` as well: chat -> ``/openai/deployments/dep/chat/completions``
  whatever the body's ``model``; responses still -> ``/openai/responses``.
- ``AzureOpenAI(base_url=E/openai/deployments/dep, ...)``: both are deployment-scoped:
  ``/openai/deployments/dep/chat/completions`` and ``/openai/deployments/dep/responses``.
- ``azure_ad_token_provider=f``: ``Authorization: Bearer f()`` (called for every request),
  no ``api-key``.
- ``OpenAI(base_url=E/openai/v1, api_key=K)``: ``/openai/v1/chat/completions`` and
  ``/openai/v1/responses`` with ``Authorization: Bearer K`` and no query;
  ``AzureOpenAI(base_url=E/openai/v1, api_version="preview", ...)`` adds ``?api-version=preview``
  and, for chat only, still inserts the deployment: ``/openai/v1/deployments/{model}/chat/completions``
  (Microsoft's v1 examples use the plain ``OpenAI`` client instead).

Every exchange is spec-checked on teardown (chat against the Chat Completions schemas,
Responses against ``CreateResponse`` / ``Response`` / ``ResponseStreamEvent``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI, OpenAI
from openai_spec import assert_valid
from test_testing_chat import check_chat

from clearance.testing import ModelTurn, ScriptedOpenAI, turn

API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Refund order ord_1 by 10."}]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "refund_payment",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id", "amount"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]


def check_responses(rec: Any) -> None:
    assert rec.api == "responses"
    if isinstance(rec.turn, ModelTurn):
        assert_valid("CreateResponse", rec.json)
    if rec.status == 200 and isinstance(rec.turn, ModelTurn):
        assert_valid("Response", rec.response, strict_one_of=True)
    elif rec.status is not None and rec.status >= 400:
        assert_valid("ErrorResponse", rec.response, strict_one_of=True)
    for event in rec.events or ():
        assert_valid("ResponseStreamEvent", event, strict_one_of=True)


@pytest.fixture
def wire_check() -> Callable[[ScriptedOpenAI], None]:
    """What ``serve`` (conftest.py) checks at teardown here: no script problems, and each exchange
    against the schemas of its API."""

    def check(server: ScriptedOpenAI) -> None:
        assert not server.problems, server.problems
        for rec in server.requests:
            if rec.api == "chat":
                check_chat(rec)
            elif rec.api == "responses":
                check_responses(rec)

    return check


def azure(server: ScriptedOpenAI, **kwargs: Any) -> AzureOpenAI:
    kwargs.setdefault("api_version", API_VERSION)
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 10)
    if "base_url" not in kwargs:
        kwargs["azure_endpoint"] = server.azure_endpoint
    return AzureOpenAI(_strict_response_validation=True, **kwargs)


def chat(c: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-4o-prod")
    kwargs.setdefault("messages", MESSAGES)
    return c.chat.completions.create(**kwargs)


def test_server_urls(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve()
    root = f"http://127.0.0.1:{server.port}"
    assert server.azure_endpoint == root and server.base_url == root + "/v1"
    assert server.base_url_azure_v1 == root + "/openai/v1"
    assert server.azure_deployment_url("dep-1") == root + "/openai/deployments/dep-1"


def test_classic_endpoint_with_api_key(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}),
        turn.text("Refunded."),
    )
    c = azure(server, api_key="azkey")
    completion = chat(c, tools=CHAT_TOOLS)
    assert (completion.choices[0].message.tool_calls or [])[0].function.name == "refund_payment"
    assert c.responses.create(model="gpt-5-prod", input="hi").output_text == "Refunded."
    chat_rec, resp_rec = server.requests
    assert (chat_rec.api, chat_rec.method, chat_rec.path) == ("chat", "POST", "/openai/deployments/gpt-4o-prod/chat/completions")
    assert chat_rec.query == {"api-version": API_VERSION} and chat_rec.api_version == API_VERSION
    assert chat_rec.deployment == "gpt-4o-prod" and chat_rec.json["model"] == "gpt-4o-prod"
    assert chat_rec.api_key == "azkey" and "authorization" not in chat_rec.headers and chat_rec.bearer_token is None
    assert (resp_rec.api, resp_rec.path, resp_rec.query) == ("responses", "/openai/responses", {"api-version": API_VERSION})
    assert resp_rec.deployment is None and resp_rec.json["model"] == "gpt-5-prod" and resp_rec.api_key == "azkey"


def test_azure_deployment_scopes_chat_only(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("chat"), turn.text("responses"))
    c = azure(server, api_key="azkey", azure_deployment="dep-x")
    assert chat(c, model="ignored-model").choices[0].message.content == "chat"
    assert c.responses.create(model="dep-x", input="hi").output_text == "responses"
    chat_rec, resp_rec = server.requests
    assert chat_rec.path == "/openai/deployments/dep-x/chat/completions" and chat_rec.deployment == "dep-x"
    assert chat_rec.json["model"] == "ignored-model"
    assert resp_rec.path == "/openai/responses" and resp_rec.deployment is None
    assert {r.api_version for r in server.requests} == {API_VERSION}


def test_deployment_base_url_scopes_both_apis(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("chat"), turn.text("responses"))
    c = azure(server, base_url=server.azure_deployment_url("dep-y"), api_key="azkey")
    assert chat(c, model="dep-y").choices[0].message.content == "chat"
    assert c.responses.create(model="dep-y", input="hi").output_text == "responses"
    chat_rec, resp_rec = server.requests
    assert chat_rec.path == "/openai/deployments/dep-y/chat/completions"
    assert resp_rec.path == "/openai/deployments/dep-y/responses"
    assert [(r.api, r.deployment, r.api_version) for r in server.requests] == [
        ("chat", "dep-y", API_VERSION),
        ("responses", "dep-y", API_VERSION),
    ]


def test_entra_token_provider_is_called_per_request(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("one"), turn.text("two"), turn.text("three"))
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return f"entra-token-{len(calls)}"

    c = azure(server, azure_ad_token_provider=token)
    chat(c)
    chat(c)
    c.responses.create(model="gpt-5-prod", input="hi")
    assert [r.bearer_token for r in server.requests] == ["entra-token-1", "entra-token-2", "entra-token-3"]
    assert all(r.api_key is None for r in server.requests)
    assert [r.path for r in server.requests] == [
        "/openai/deployments/gpt-4o-prod/chat/completions",
        "/openai/deployments/gpt-4o-prod/chat/completions",
        "/openai/responses",
    ]


def test_v1_base_url_with_plain_openai_client(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("chat"), turn.text("responses"))
    c = OpenAI(base_url=server.base_url_azure_v1, api_key="azkey", max_retries=0, _strict_response_validation=True)
    assert chat(c).choices[0].message.content == "chat"
    assert c.responses.create(model="gpt-5-prod", input="hi").output_text == "responses"
    chat_rec, resp_rec = server.requests
    assert (chat_rec.path, chat_rec.query, chat_rec.deployment) == ("/openai/v1/chat/completions", {}, None)
    assert (resp_rec.path, resp_rec.query) == ("/openai/v1/responses", {})
    assert all(r.bearer_token == "azkey" and r.api_key is None and r.api_version is None for r in server.requests)


def test_v1_base_url_with_azure_client_keeps_api_version(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("chat"), turn.text("responses"))
    c = azure(server, base_url=server.base_url_azure_v1, api_version="preview", azure_ad_token="T0K")
    assert chat(c).choices[0].message.content == "chat"
    assert c.responses.create(model="gpt-5-prod", input="hi").output_text == "responses"
    assert [(r.path, r.api_version, r.bearer_token) for r in server.requests] == [
        # AzureOpenAI inserts /deployments/{model} for chat even under a v1 base URL
        ("/openai/v1/deployments/gpt-4o-prod/chat/completions", "preview", "T0K"),
        ("/openai/v1/responses", "preview", "T0K"),
    ]
    assert [r.deployment for r in server.requests] == ["gpt-4o-prod", None]


def test_streaming_over_azure(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.text("Hello from chat").streamed(),
        turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10}),
        turn.text("Hello from responses"),
    )
    c = azure(server, api_key="azkey")
    chunks = list(chat(c, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hello from chat"
    assert chunks[-1].usage is not None
    with c.chat.completions.stream(model="gpt-4o-prod", messages=MESSAGES, tools=CHAT_TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert (final.choices[0].message.tool_calls or [])[0].function.parsed_arguments == {"order_id": "ord_1", "amount": 10}
    with c.responses.stream(model="gpt-5-prod", input="hi") as rstream:
        for _ in rstream:
            pass
        assert rstream.get_final_response().output_text == "Hello from responses"
    assert [(r.api, r.path, r.streamed, r.api_key) for r in server.requests] == [
        ("chat", "/openai/deployments/gpt-4o-prod/chat/completions", True, "azkey"),
        ("chat", "/openai/deployments/gpt-4o-prod/chat/completions", True, "azkey"),
        ("responses", "/openai/responses", True, "azkey"),
    ]
    assert server.requests[0].done


def test_async_azure_client_with_async_token_provider(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("async chat"), turn.text("async responses"))

    async def token() -> str:
        return "async-token"

    async def run() -> tuple[str | None, str]:
        async with AsyncAzureOpenAI(
            azure_endpoint=server.azure_endpoint,
            api_version=API_VERSION,
            azure_ad_token_provider=token,
            max_retries=0,
            _strict_response_validation=True,
        ) as c:
            completion = await c.chat.completions.create(model="gpt-4o-prod", messages=MESSAGES)
            response = await c.responses.create(model="gpt-5-prod", input="hi")
            return completion.choices[0].message.content, response.output_text

    assert asyncio.run(run()) == ("async chat", "async responses")
    assert [(r.path, r.bearer_token) for r in server.requests] == [
        ("/openai/deployments/gpt-4o-prod/chat/completions", "async-token"),
        ("/openai/responses", "async-token"),
    ]


def test_azure_client_helpers(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(turn.text("a"), turn.text("b"), turn.text("c"))
    assert chat(server.azure_client(max_retries=0)).choices[0].message.content == "a"
    assert chat(server.azure_client(api_version="2025-04-01-preview", azure_ad_token="tok")).choices[0].message.content == "b"

    async def run() -> str | None:
        async with server.async_azure_client(max_retries=0) as c:
            return (await c.chat.completions.create(model="m", messages=MESSAGES)).choices[0].message.content

    assert asyncio.run(run()) == "c"
    assert [(r.api_version, r.api_key, r.bearer_token) for r in server.requests] == [
        (API_VERSION, "test", None),
        ("2025-04-01-preview", None, "tok"),
        (API_VERSION, "test", None),
    ]


def test_errors_over_azure(serve: Callable[..., ScriptedOpenAI]) -> None:
    server = serve(
        turn.error(429, retry_after_ms=10, code="429"),
        turn.text("after retry"),
        turn.error(401, message="Access denied due to invalid subscription key.", code="401"),
    )
    c = azure(server, api_key="azkey", max_retries=1)
    assert chat(c).choices[0].message.content == "after retry"
    with pytest.raises(openai.AuthenticationError) as info:
        c.responses.create(model="gpt-5-prod", input="hi")
    assert info.value.code == "401"
    assert [(r.api, r.status, r.retry_count) for r in server.requests] == [
        ("chat", 429, 0),
        ("chat", 200, 1),
        ("responses", 401, 0),
    ]


def test_classic_deployment_path_without_model_in_body() -> None:
    # Azure deployment paths name the model, so the body may leave it out (not valid against
    # CreateChatCompletionRequest, hence no spec-checking fixture here; the reply is checked).
    with ScriptedOpenAI([turn.text("ok")]) as server:
        url = server.azure_deployment_url("dep-z") + "/chat/completions?api-version=" + API_VERSION
        with httpx.Client(timeout=10) as http:
            reply = http.post(url, json={"messages": MESSAGES}, headers={"api-key": "k"})
    assert reply.status_code == 200 and reply.json()["model"] == "dep-z"
    (rec,) = server.requests
    assert rec.deployment == "dep-z" and rec.api_version == API_VERSION and rec.api_key == "k"
    assert_valid("CreateChatCompletionResponse", rec.response, strict_one_of=True, nullable=True)
    server.assert_all_played()
