"""The guard over Chat Completions (api="chat") and on Azure OpenAI URLs, sync and async.

Same decisions, events, return shape, approvals and resume as the Responses path; only the
wire differs. Real SDK -> ScriptedOpenAI (chat and Azure forms) on loopback -> real SQLite.
Every exchange is checked against the official spec at teardown (adapter_support.serve).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from adapter_support import guard_for, recording_refund_guard, refund_payment

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Refund order ord_1 for 10"}]
CALL = turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10})


def chat_guard(server: ScriptedOpenAI, engine: Any, cls: type = GuardedOpenAI, ran: list | None = None, **kw: Any) -> Any:
    return recording_refund_guard(server, engine, cls, ran, api="chat", **kw)


def run(kind: str, g: Any, **kw: Any) -> dict[str, Any]:
    if kind == "sync":
        return g.run(messages=USER, model="gpt-4.1", **kw)  # type: ignore[no-any-return]
    return asyncio.run(g.run(messages=USER, model="gpt-4.1", **kw))  # type: ignore[no-any-return]


def stream(kind: str, g: Any, **kw: Any) -> list[dict[str, Any]]:
    if kind == "sync":
        return list(g.run_stream(messages=USER, model="gpt-4.1", **kw))

    async def main() -> list[dict[str, Any]]:
        return [e async for e in g.run_stream(messages=USER, model="gpt-4.1", **kw)]

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_call_over_chat_is_decided_run_and_answered_with_a_tool_message(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(CALL, turn.text("Refunded."))
    ran: list[str] = []
    result = run(kind, chat_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI, ran))
    assert ran == ["ord_1"] and result["status"] == "completed" and result["output_text"] == "Refunded."
    assert result["execution"]["last"]["status"] == "executed" and result["execution"]["last"]["decision"]["result"] == "allowed"
    assert result["llm_response"]["object"] == "chat.completion", "llm_response is the provider's own response"
    first, second = (r.json for r in server.requests)
    assert [r.path for r in server.requests] == ["/v1/chat/completions"] * 2
    assert first["tools"][0]["type"] == "function" and first["tools"][0]["function"]["name"] == "refund_payment"
    assert first["tools"][0]["function"]["strict"] is True and "input" not in first and "include" not in first
    assistant, tool = second["messages"][-2:]
    [tool_call] = assistant["tool_calls"]
    assert tool == {"role": "tool", "tool_call_id": tool_call["id"], "content": json.dumps({"ok": True, "order_id": "ord_1", "amount": 10.0}, ensure_ascii=False)}


def test_a_blocked_call_over_chat_gets_a_structured_refusal(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_9", "amount": 5000}), turn.text("Sorry."))
    ran: list[str] = []
    result = chat_guard(server, engine, ran=ran).run(messages=USER, model="gpt-4.1")
    assert ran == [] and result["execution"]["last"]["status"] == "blocked"
    refusal = json.loads(server.requests[1].json["messages"][-1]["content"])
    assert refusal["status"] == "blocked" and refusal["request_id"] == result["execution"]["last"]["request_id"]


def test_approval_and_resume_over_chat(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_7", "amount": 900}), turn.text("Refunded after approval."))
    ran: list[str] = []
    g = chat_guard(server, engine, ran=ran)
    first = g.run(messages=USER, model="gpt-4.1")
    assert first["status"] == "approval_required" and ran == []
    approval_id = first["pending_approvals"][0]["approval_id"]
    engine.resolve_approval(approval_id, "approved", approver="alice")
    resumed = g.resume_after_approval(approval_id)
    assert ran == ["ord_7"] and resumed["output_text"] == "Refunded after approval."
    assert server.requests[1].json["messages"][-1]["role"] == "tool"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_chat_streams_give_the_same_events(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.text("Checking.") + CALL, turn.text("Refunds take five days."))
    ran: list[str] = []
    events = stream(kind, chat_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI, ran))
    types = [e["type"] for e in events]
    assert ran == ["ord_1"]
    for expected in ("output_item_added", "llm_delta", "llm_text_done", "function_call_args_delta",
                     "function_call_args_done", "response_done", "execution_event", "final_response"):  # fmt: skip
        assert expected in types, expected
    assert types.index("function_call_args_done") < types.index("execution_event")
    args = "".join(e["delta"] for e in events if e["type"] == "function_call_args_delta")
    assert json.loads(args) == {"order_id": "ord_1", "amount": 10}
    assert "".join(e["delta"] for e in events if e["type"] == "llm_delta") == "Checking.Refunds take five days."
    assert events[-1]["response"]["output_text"] == "Refunds take five days."
    assert all(r.json["stream"] is True and r.json["stream_options"] == {"include_usage": True} for r in server.requests)
    assert all(e["raw"]["object"] == "chat.completion.chunk" for e in events if e["type"] == "llm_delta")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_cut_chat_stream_runs_nothing_and_can_be_retried(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(CALL.cut_after(4), CALL, turn.text("Done."))
    ran: list[str] = []
    g = chat_guard(server, engine, GuardedOpenAI if kind == "sync" else AsyncGuardedOpenAI, ran)
    if kind == "sync":
        first = list(g.run_stream(messages=USER, model="gpt-4.1"))
        again = g.retry_run(first[-1]["response"]["retry_id"])
    else:
        async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
            events = [e async for e in g.run_stream(messages=USER, model="gpt-4.1")]
            return events, await g.retry_run(events[-1]["response"]["retry_id"])

        first, again = asyncio.run(main())
    assert first[-2]["type"] == "response_failed" and first[-1]["response"]["status"] == "failed"
    assert ran == ["ord_1"] and again["output_text"] == "Done."


class Refund(pydantic.BaseModel):
    order_id: str
    approved: bool


def test_structured_output_over_chat_uses_response_format(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text('{"order_id": "ord_1", "approved": true}'))
    result = chat_guard(server, engine).run(messages=USER, model="gpt-4.1", response_format=Refund)
    assert result["structured"] == Refund(order_id="ord_1", approved=True)
    fmt = server.requests[0].json["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Refund" and fmt["json_schema"]["strict"] is True


def test_list_tools_is_nested_for_chat(serve: Serve, engine: Engine) -> None:
    g = chat_guard(serve(), engine)
    [spec] = g.list_tools()
    assert spec["type"] == "function" and spec["function"]["name"] == "refund_payment"


# -- Azure OpenAI ------------------------------------------------------------------------------
def azure_guard(server: ScriptedOpenAI, engine: Engine, api: str, cls: type = GuardedOpenAI, **kw: Any) -> Any:
    kw.setdefault("azure_endpoint", server.azure_endpoint)
    g = cls(engine=engine, api=api, actor="agent-7", domain="shop", provider_retry_backoff_seconds=0.01, **kw)
    g.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
    return g


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_azure_classic_urls_with_an_api_key(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(CALL, turn.text("Refunded."))
    g = azure_guard(server, engine, api, openai_api_key="azure-key", deployment="gpt4o-prod")
    result = g.run(messages=USER)  # the deployment is the model
    assert result["output_text"] == "Refunded."
    for rec in server.requests:
        expected = "/openai/deployments/gpt4o-prod/chat/completions" if api == "chat" else "/openai/responses"
        assert rec.path == expected and rec.query == {"api-version": "2024-06-01"}
        assert rec.headers.get("api-key") == "azure-key" and "authorization" not in {h.lower() for h in rec.headers}
        assert rec.json["model"] == "gpt4o-prod"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_azure_entra_token_provider_and_api_version_override(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(turn.text("ok"))
    g = azure_guard(server, engine, api, azure_ad_token_provider=lambda: "entra-token", deployment="dep1",
                    api_version="2025-04-01-preview")  # fmt: skip
    g.run(messages=USER)
    [rec] = server.requests
    headers = {k.lower(): v for k, v in rec.headers.items()}
    assert headers["authorization"] == "Bearer entra-token" and "api-key" not in headers
    assert rec.query == {"api-version": "2025-04-01-preview"}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_azure_v1_base_url(serve: Serve, engine: Engine, api: str) -> None:
    server = serve(turn.text("ok"))
    g = azure_guard(server, engine, api, openai_api_key="azure-key", api_version="v1", model="gpt-4.1-mini")
    g.run(messages=USER)
    [rec] = server.requests
    assert rec.path == ("/openai/v1/chat/completions" if api == "chat" else "/openai/v1/responses")
    assert rec.query == {} and {k.lower(): v for k, v in rec.headers.items()}["authorization"] == "Bearer azure-key"


def test_azure_v1_with_an_async_token_provider(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("ok"))

    async def token() -> str:
        return "async-entra"

    async def main() -> None:
        g = azure_guard(server, engine, "chat", AsyncGuardedOpenAI, azure_ad_token_provider=token, api_version="v1",
                        model="gpt-4.1")  # fmt: skip
        await g.run(messages=USER)

    asyncio.run(main())
    assert {k.lower(): v for k, v in server.requests[0].headers.items()}["authorization"] == "Bearer async-entra"


def test_azure_is_detected_from_the_engram_environment(serve: Serve, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(turn.text("ok"))
    monkeypatch.setenv("AZURE_ENDPOINT", server.azure_endpoint)
    monkeypatch.setenv("AZURE_API_KEY", "env-key")
    monkeypatch.setenv("AZURE_DEPLOYMENT", "env-dep")
    g = GuardedOpenAI(engine=engine, api="chat")
    assert g.azure is not None and g.model == "env-dep"
    g.run(messages=USER)
    [rec] = server.requests
    assert rec.path == "/openai/deployments/env-dep/chat/completions" and rec.query == {"api-version": "2024-06-01"}
    assert rec.headers.get("api-key") == "env-key"


def test_azure_without_credentials_is_a_clear_error(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="Azure OpenAI needs an API key"):
        GuardedOpenAI(engine=engine, azure_endpoint="https://example.openai.azure.com")


def test_no_model_anywhere_is_a_clear_error(serve: Serve, engine: Engine) -> None:
    server = serve()
    with pytest.raises(ValueError, match="name the model"):
        guard_for(server, engine).run(messages=USER)
