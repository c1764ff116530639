"""Structured output, the structured tool, declared tools and dispatch (the engram's workflow-step features).

Real SDK -> ScriptedOpenAI on loopback -> real SQLite engine; webhooks go to a real HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pydantic
import pytest
from adapter_support import decision_rows, guard_for
from openai_spec import assert_valid
from standardwebhooks import Webhook

from clearance import AsyncGuardedOpenAI, Engine, parse_rules
from clearance.adapters.openai.dispatch import DispatchWebhook
from clearance.errors import StructuredOutputError
from clearance.signing import WebhookSignatureError, verify
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Create a ticket for the server outage."}]


class Ticket(pydantic.BaseModel):
    """A support ticket."""

    customer_name: str
    issue_type: Literal["billing", "outage", "other"]
    priority: Literal["low", "high"]
    tags: list[str]


TICKET = {"customer_name": "Alice", "issue_type": "outage", "priority": "high", "tags": ["ops", "urgent"]}
STORY = {"type": "object", "properties": {"storyName": {"type": "string"}, "inputs": {"type": "object"}}, "required": ["storyName"]}
FIELDS = {"type": "object", "additionalProperties": False, "required": ["customer_name", "priority"],
          "properties": {"customer_name": {"type": "string"}, "priority": {"type": "string"}}}  # fmt: skip


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_pydantic_response_format_comes_back_as_an_instance(serve: Serve, engine: Engine, kind: str) -> None:
    server = serve(turn.text(json.dumps(TICKET)))
    if kind == "sync":
        result = guard_for(server, engine).run(messages=USER, model="gpt-4.1", response_format=Ticket)
    else:
        result = asyncio.run(guard_for(server, engine, AsyncGuardedOpenAI).run(messages=USER, model="gpt-4.1", response_format=Ticket))
    assert result["structured"] == Ticket(**TICKET) and isinstance(result["structured"], Ticket)
    fmt = server.requests[0].json["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "Ticket" and fmt["strict"] is True
    assert fmt["description"] == "A support ticket."
    assert set(fmt["schema"]["required"]) == set(TICKET) and fmt["schema"]["additionalProperties"] is False


def test_an_answer_that_does_not_fit_is_an_error_with_the_whole_result(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text(json.dumps({**TICKET, "priority": "whenever"})), turn.text("not json at all"))
    g = guard_for(server, engine)
    with pytest.raises(StructuredOutputError, match="does not fit Ticket") as exc:
        g.run(messages=USER, model="gpt-4.1", response_format=Ticket)
    assert exc.value.errors and "/priority" in exc.value.errors[0]
    assert exc.value.result is not None and exc.value.result["output_text"].startswith("{")
    with pytest.raises(StructuredOutputError, match="not JSON"):
        g.run(messages=USER, model="gpt-4.1", response_format=Ticket)


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema", "jsonSchema": {"name": "fields", "strict": True, "schema": FIELDS}},   # the engram's shape
    {"type": "json_schema", "json_schema": {"name": "fields", "schema": FIELDS}},                 # Chat's shape
    {"type": "json_schema", "name": "fields", "schema": FIELDS},                                   # Responses' shape
    FIELDS,                                                                                        # a bare schema
])  # fmt: skip
def test_json_schema_formats_in_every_shape(serve: Serve, engine: Engine, fmt: dict) -> None:
    server = serve(turn.text('{"customer_name": "Bob", "priority": "low"}'))
    result = guard_for(server, engine).run(messages=USER, model="gpt-4.1", response_format=fmt)
    assert result["structured"] == {"customer_name": "Bob", "priority": "low"}
    sent = server.requests[0].json["text"]["format"]
    assert sent["type"] == "json_schema" and sent["schema"] == FIELDS and sent["strict"] is True
    assert_valid("CreateResponse", server.requests[0].json)


def test_unknown_response_format_is_refused_before_anything_is_sent(serve: Serve, engine: Engine) -> None:
    server = serve()
    with pytest.raises(ValueError, match="unknown response format type 'yaml'"):
        guard_for(server, engine).run(messages=USER, model="gpt-4.1", response_format={"type": "yaml"})
    assert server.requests == []


def test_the_structured_tool_returns_its_arguments_and_runs_nothing(serve: Serve, engine: Engine, db_path: Any) -> None:
    server = serve(turn.text("I've extracted the relevant fields.") + turn.function_call("extract_fields", {"customer_name": "Alice", "priority": "high"}))
    g = guard_for(server, engine, structured_tool_name="extract_fields")
    g.declare_tool("extract_fields", FIELDS, description="Extract the ticket fields")
    result = g.run(messages=USER, model="gpt-4.1")
    assert result["structured"] == {"customer_name": "Alice", "priority": "high"}
    assert result["output_text"] == "I've extracted the relevant fields." and result["status"] == "completed"
    assert len(server.requests) == 1 and decision_rows(db_path) == [], "extraction is not an action: nothing decided"


def dispatch_guard(server: ScriptedOpenAI, engine: Engine, sent: list, **kw: Any) -> Any:
    g = guard_for(server, engine, dispatch_tools={"run_story": "create-ticket-story", "open_ticket": "ticket-story"},
                  dispatcher=lambda req: sent.append(req) or {"accepted": True}, **kw)  # fmt: skip
    g.declare_tool("run_story", STORY, description="Trigger a follow-up story with inputs")
    g.declare_tool("open_ticket", FIELDS)
    return g


def test_an_allowed_dispatch_hands_an_action_request_to_the_dispatcher(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.function_calls([("run_story", {"storyName": "escalate", "inputs": {"sev": 1}}),
                             ("open_ticket", {"customer_name": "Alice", "priority": "high"})]),  # fmt: skip
        turn.text("Escalated and ticketed."),
    )
    sent: list[dict] = []
    result = dispatch_guard(server, engine, sent).run(messages=USER, model="gpt-4.1")
    assert sent == [{"tool": "run_story", "target": "escalate", "inputs": {"sev": 1}},
                    {"tool": "open_ticket", "target": "ticket-story", "inputs": {"customer_name": "Alice", "priority": "high"}}]  # fmt: skip
    assert result["action_request"] == sent[0] and result["action_requests"] == sent
    assert [e["status"] for e in result["execution"]["events"]] == ["executed", "executed"]
    outputs = [json.loads(i["output"]) for i in server.requests[1].json["input"] if i.get("type") == "function_call_output"]
    assert outputs[0] == {"status": "dispatched", "action_request": sent[0], "response": {"accepted": True}}


def test_a_blocked_dispatch_is_not_dispatched(serve: Serve, engine: Engine) -> None:
    engine.apply_rules(parse_rules("version: 1\nrules:\n  - id: no-stories\n    tool: run_story\n    effect: block\n"))
    server = serve(turn.function_call("run_story", {"storyName": "wipe"}), turn.text("I can't."))
    sent: list[dict] = []
    result = dispatch_guard(server, engine, sent).run(messages=USER, model="gpt-4.1")
    assert sent == [] and result["action_request"] is None
    assert result["execution"]["last"]["status"] == "blocked"


def test_a_dispatch_that_needs_approval_is_dispatched_when_approved(serve: Serve, engine: Engine) -> None:
    engine.apply_rules(parse_rules("version: 1\nrules:\n  - id: ask\n    tool: run_story\n    effect: require_approval\n"))
    server = serve(turn.function_call("run_story", {"storyName": "refund-all"}), turn.text("Done."))
    sent: list[dict] = []
    g = dispatch_guard(server, engine, sent)
    first = g.run(messages=USER, model="gpt-4.1")
    assert first["status"] == "approval_required" and sent == []
    approval_id = first["pending_approvals"][0]["approval_id"]
    engine.resolve_approval(approval_id, "approved", approver="alice")
    resumed = g.resume_after_approval(approval_id)
    assert sent == [{"tool": "run_story", "target": "refund-all", "inputs": {}}]
    assert resumed["action_request"] == sent[0]


def test_structured_extraction_wins_over_dispatch_for_the_same_tool(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("open_ticket", {"customer_name": "Alice", "priority": "high"}))
    sent: list[dict] = []
    result = dispatch_guard(server, engine, sent, structured_tool_name="open_ticket").run(messages=USER, model="gpt-4.1")
    assert sent == [] and result["structured"] == {"customer_name": "Alice", "priority": "high"}


def test_dispatch_tools_without_a_dispatcher_are_refused(serve: Serve, engine: Engine) -> None:
    with pytest.raises(ValueError, match="dispatch_tools needs a dispatcher"):
        guard_for(serve(), engine, dispatch_tools={"run_story": "x"})


def test_a_declared_tool_call_is_decided_and_handed_back_not_run(serve: Serve, engine: Engine, db_path: Any) -> None:
    server = serve(turn.function_call("open_ticket", {"customer_name": "Alice", "priority": "high"}))
    g = guard_for(server, engine)
    g.declare_tool("open_ticket", FIELDS)
    result = g.run(messages=USER, model="gpt-4.1")
    [call] = result["tool_calls"]
    assert call["name"] == "open_ticket" and call["arguments"] == {"customer_name": "Alice", "priority": "high"}
    assert call["decision"]["result"] == "allowed" and call["request_id"]
    assert result["execution"]["last"]["status"] == "handed_off" and len(server.requests) == 1
    assert [r["request_id"] for r in decision_rows(db_path)] == [call["request_id"]]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict], list[int]]]:
    """A real HTTP receiver on loopback that keeps each request; answers 500 first if asked."""
    received: list[dict] = []
    fail_first: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
            status = 500 if fail_first and len(received) <= fail_first[0] else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"run": "sr-1"}')

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received, fail_first
    httpd.shutdown()


def test_a_webhook_dispatch_is_signed_and_retried_with_one_message_id(serve: Serve, engine: Engine, webhook: Any) -> None:
    url, received, fail_first = webhook
    fail_first.append(1)
    server = serve(turn.function_call("run_story", {"storyName": "escalate"}), turn.text("ok"))
    g = guard_for(server, engine, dispatch_tools={"run_story": "default-story"},
                  dispatcher=DispatchWebhook(url, "s3cret", backoff_seconds=0.01))  # fmt: skip
    g.declare_tool("run_story", STORY)
    result = g.run(messages=USER, model="gpt-4.1")
    assert result["execution"]["last"]["output"]["response"] == {"run": "sr-1"}
    first, retry = received
    request_id = result["execution"]["last"]["decision"]["request_id"]
    assert first["headers"]["webhook-id"] == retry["headers"]["webhook-id"] == f"dsp_{request_id}"  # one id per call
    for r in received:  # our helper and the Standard Webhooks library (the plain secret's bytes are the key)
        assert verify("s3cret", r["body"], r["headers"]) == {"tool": "run_story", "target": "escalate", "inputs": {}}
        assert Webhook(b"s3cret").verify(r["body"], r["headers"]) == json.loads(r["body"])
        assert not {"x-clearance-signature", "x-clearance-timestamp", "x-clearance-delivery"} & set(r["headers"])
    with pytest.raises(WebhookSignatureError, match="wrong secret"):
        verify("wrong", retry["body"], retry["headers"])
    with pytest.raises(WebhookSignatureError, match="altered"):
        verify("s3cret", retry["body"].replace(b"escalate", b"delete-all"), retry["headers"])
    with pytest.raises(WebhookSignatureError, match="no webhook-timestamp header"):
        verify("s3cret", retry["body"], {k: v for k, v in retry["headers"].items() if k != "webhook-timestamp"})


def test_an_approved_dispatch_is_named_by_its_decision_also_from_the_async_guard(serve: Serve, engine: Engine,
                                                                                webhook: Any) -> None:  # fmt: skip
    url, received, _ = webhook
    engine.apply_rules(parse_rules("version: 1\nrules:\n  - id: ask\n    tool: run_story\n    effect: require_approval\n"))
    server = serve(turn.function_call("run_story", {"storyName": "refund-all"}), turn.text("Done."))
    g = guard_for(server, engine, AsyncGuardedOpenAI, dispatch_tools={"run_story": "x"}, dispatcher=DispatchWebhook(url, "s3cret"))
    g.declare_tool("run_story", STORY)

    async def approve_and_resume() -> dict[str, Any]:
        [pending] = (await g.run(messages=USER, model="gpt-4.1"))["pending_approvals"]
        assert received == []
        engine.resolve_approval(pending["approval_id"], "approved", approver="alice")
        await g.resume_after_approval(pending["approval_id"])
        return pending  # type: ignore[no-any-return]

    pending = asyncio.run(approve_and_resume())
    [sent] = received
    assert sent["headers"]["webhook-id"] == f"dsp_{pending['request_id']}"
    assert verify("s3cret", sent["body"], sent["headers"]) == {"tool": "run_story", "target": "refund-all", "inputs": {}}
