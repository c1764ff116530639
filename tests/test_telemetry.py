"""OpenTelemetry spans: ``clearance.evaluate`` per decision, ``clearance.tool_call`` per tool run.

Spans are recorded by the real OpenTelemetry SDK (a TracerProvider with an InMemorySpanExporter)
while real guards run against the scripted OpenAI server, over both engines (embedded, and a
``clearance serve`` process). What is asserted is what a person reading a trace relies on: one
evaluate span per decision with its verdict, one tool_call span per tool that really ran, both
nested under the caller's own span, errors marked as errors, and a blocked call leaving no
tool_call span. Without OpenTelemetry the guard must behave exactly as before.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from adapter_support import guard_for, tool_outputs

pytest.importorskip("opentelemetry.sdk", reason="the test extra installs opentelemetry-sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode, get_current_span  # noqa: E402

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI, parse_rules, telemetry  # noqa: E402
from clearance.testing import ScriptedOpenAI, turn  # noqa: E402

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Refund order o1 for 10 and delete account a1"}]


class Traces:
    """The spans finished so far, and a tracer for the test's own (the caller's) spans."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider, self.exporter = provider, exporter
        self.tracer = provider.get_tracer("the-app")

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span


@pytest.fixture
def traces() -> Iterator[Traces]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        yield Traces(provider, exporter)
    finally:
        telemetry.use_tracer_provider(None)
        provider.shutdown()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


#: The guard's tests count the spans of the agent's process. The remote variant's server must be
#: another process, as in production: a server in this process would export its own spans (in the
#: same trace) to the same exporter.
AGENT_SPANS_ONLY = pytest.mark.server_process("the spans counted are the agent process's own; a server in this "
                                              "process would export its spans to the same exporter")  # fmt: skip


def refund_and_delete_guard(server: ScriptedOpenAI, engine: Any, traces: Traces, cls: type = GuardedOpenAI) -> Any:
    """``refund_payment`` (opens a span of its own while it works) and ``delete_account`` (blocked)."""
    guard = guard_for(server, engine, cls)

    def refund_payment(order_id: str, amount: float) -> dict[str, Any]:
        with traces.tracer.start_as_current_span("payments.refund"):
            return {"ok": True, "order_id": order_id}

    def delete_account(account_id: str) -> str:
        raise AssertionError("a blocked call must never run")

    guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
    guard.tool("delete_account", delete_account)
    return guard


@AGENT_SPANS_ONLY
def test_a_run_traces_each_decision_and_each_tool_that_ran_under_the_callers_span(
    serve: Serve, engine: Any, traces: Traces
) -> None:
    server = serve(
        turn.function_calls([("refund_payment", {"order_id": "o1", "amount": 10}, "c1"),
                             ("delete_account", {"account_id": "a1"}, "c2")]),  # fmt: skip
        turn.text("Refunded; the account stays."),
    )
    guard = refund_and_delete_guard(server, engine, traces)
    with traces.tracer.start_as_current_span("handle-ticket") as user_span:
        result = guard.run(messages=USER, model="gpt-4.1")
    assert result["status"] == "completed"
    events = {e["tool"]: e for e in result["execution"]["events"]}
    allowed, blocked = events["refund_payment"], events["delete_account"]
    assert (allowed["status"], blocked["status"]) == ("executed", "blocked")

    user = traces.one("handle-ticket")
    evaluates = {s.attributes["clearance.tool"]: s for s in traces.named("clearance.evaluate")}
    assert set(evaluates) == {"refund_payment", "delete_account"}
    for tool, event in (("refund_payment", allowed), ("delete_account", blocked)):
        span = evaluates[tool]
        assert parent_id(span) == span_id(user) and span.context.trace_id == user_span.get_span_context().trace_id
        assert span.kind is SpanKind.INTERNAL and span.status.status_code is StatusCode.UNSET
        assert dict(span.attributes) == {
            "clearance.tool": tool, "clearance.actor": "agent-7", "clearance.domain": "shop",
            "clearance.result": event["decision"]["result"],
            "clearance.matched_rules": tuple(m["rule_id"] for m in event["decision"]["matched_rules"]),
            "clearance.risk_score": event["decision"]["risk_score"],
            "clearance.request_id": event["request_id"],
            "clearance.policy_version": event["decision"]["policy_version"],
        }  # fmt: skip
    assert evaluates["delete_account"].attributes["clearance.result"] == "blocked"
    assert evaluates["delete_account"].attributes["clearance.matched_rules"] == ("never-delete",)

    # Only the call that ran has a tool_call span; the tool's own span nests inside it.
    tool_call = traces.one("clearance.tool_call")
    assert parent_id(tool_call) == span_id(user)
    assert tool_call.attributes["clearance.tool"] == "refund_payment"
    assert tool_call.attributes["clearance.request_id"] == allowed["request_id"]
    assert tool_call.attributes["clearance.execution_status"] == "executed"
    assert tool_call.attributes["gen_ai.tool.call.id"] == "c1"
    assert tool_call.status.status_code is StatusCode.UNSET
    assert parent_id(traces.one("payments.refund")) == span_id(tool_call)
    # The decision came first: the tool ran only after it was decided.
    assert evaluates["refund_payment"].end_time <= tool_call.start_time


@AGENT_SPANS_ONLY
def test_a_streamed_run_traces_the_same_way(serve: Serve, engine: Any, traces: Traces) -> None:
    """The streaming driver decides and runs tools between the events it yields: the spans must still
    close inside the caller's span, and none may stay open across a yield."""
    server = serve(turn.function_call("refund_payment", {"order_id": "o1", "amount": 10}, call_id="c1"),
                   turn.text("Refunded."))  # fmt: skip
    guard = refund_and_delete_guard(server, engine, traces)
    with traces.tracer.start_as_current_span("handle-ticket"):
        events = list(guard.run_stream(messages=USER, model="gpt-4.1"))
        assert get_current_span().name == "handle-ticket"  # nothing of ours left current
    assert events[-1]["type"] == "final_response"
    user = traces.one("handle-ticket")
    assert parent_id(traces.one("clearance.evaluate")) == span_id(user)
    tool_call = traces.one("clearance.tool_call")
    assert parent_id(tool_call) == span_id(user)
    assert parent_id(traces.one("payments.refund")) == span_id(tool_call)


@AGENT_SPANS_ONLY
def test_concurrent_tool_calls_of_the_async_guard_each_get_their_own_span(serve: Serve, engine: Any,
                                                                           traces: Traces) -> None:  # fmt: skip
    """gather() runs the calls side by side: each span must be a sibling under the caller's, never nested
    in the other call's, and what a tool traces must land under its own call."""
    server = serve(turn.function_calls([("ping", {}, "c_ping"), ("pong", {}, "c_pong")]), turn.text("both"))

    async def main() -> dict[str, Any]:
        started = {"ping": threading.Event(), "pong": threading.Event()}

        async def ping() -> str:  # an async tool: it runs in its own task
            with traces.tracer.start_as_current_span("inside.ping"):
                started["ping"].set()
                assert await asyncio.to_thread(started["pong"].wait, 5)  # both are open at once
                return "ping"

        def pong() -> str:  # a sync tool: it runs in a worker thread, which must see its span too
            with traces.tracer.start_as_current_span("inside.pong"):
                started["pong"].set()
                assert started["ping"].wait(5)
                return "pong"

        guard = guard_for(server, engine, AsyncGuardedOpenAI)
        guard.tool(ping)
        guard.tool(pong)
        with traces.tracer.start_as_current_span("handle-ticket"):
            return await asyncio.wait_for(guard.run(messages=USER, model="gpt-4.1"), timeout=20)

    result = asyncio.run(main())
    assert [e["status"] for e in result["execution"]["events"]] == ["executed", "executed"]
    user = traces.one("handle-ticket")
    calls = {s.attributes["clearance.tool"]: s for s in traces.named("clearance.tool_call")}
    assert set(calls) == {"ping", "pong"}
    assert {parent_id(s) for s in calls.values()} == {span_id(user)}
    assert parent_id(traces.one("inside.ping")) == span_id(calls["ping"])
    assert parent_id(traces.one("inside.pong")) == span_id(calls["pong"])
    assert {parent_id(s) for s in traces.named("clearance.evaluate")} == {span_id(user)}
    by_id = {e["tool"]: e["request_id"] for e in result["execution"]["events"]}
    assert {t: s.attributes["clearance.request_id"] for t, s in calls.items()} == by_id


@AGENT_SPANS_ONLY
def test_a_tool_that_raises_leaves_an_error_span_and_the_run_goes_on(serve: Serve, engine: Any,
                                                                      traces: Traces) -> None:  # fmt: skip
    server = serve(turn.function_call("flaky", {"n": 1}, call_id="c1"), turn.text("recovered"))
    guard = guard_for(server, engine)

    @guard.tool
    def flaky(n: int) -> int:
        raise ConnectionError("payments API unreachable")

    result = guard.run(messages=USER, model="gpt-4.1")
    assert result["output_text"] == "recovered"
    assert tool_outputs(server.requests[1].json)["c1"]["status"] == "failed"
    span = traces.one("clearance.tool_call")
    assert span.status.status_code is StatusCode.ERROR and "payments API unreachable" in (span.status.description or "")
    assert span.attributes["clearance.execution_status"] == "failed"
    assert span.attributes["error.type"] == "ConnectionError"
    [exc] = [e for e in span.events if e.name == "exception"]
    assert exc.attributes["exception.type"] == "ConnectionError"
    # The decision itself went fine: only the tool failed.
    assert traces.one("clearance.evaluate").status.status_code is StatusCode.UNSET


@AGENT_SPANS_ONLY
def test_an_engine_that_cannot_decide_marks_its_evaluate_span_as_an_error(serve: Serve, engine: Any,
                                                                           traces: Traces) -> None:  # fmt: skip
    class BrokenEngine:
        def __init__(self, real: Any) -> None:
            self.real = real

        def evaluate(self, action: Any) -> Any:
            raise RuntimeError("database is locked")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}, call_id="c"), turn.text("ok"))
    ran: list[str] = []
    guard = guard_for(server, BrokenEngine(engine))
    guard.tool("refund_payment", lambda order_id, amount: ran.append(order_id), value_from_args=lambda a: a["amount"],
               parameters_schema={"type": "object", "properties": {"order_id": {"type": "string"},
                                  "amount": {"type": "number"}}, "required": ["order_id", "amount"],
                                  "additionalProperties": False})  # fmt: skip
    result = guard.run(messages=USER, model="gpt-4.1")
    assert result["execution"]["last"]["status"] == "blocked" and ran == []  # failed closed
    span = traces.one("clearance.evaluate")
    assert span.status.status_code is StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["RuntimeError"]
    assert "clearance.result" not in span.attributes
    assert traces.named("clearance.tool_call") == []


@AGENT_SPANS_ONLY
def test_an_approved_call_resumed_later_is_traced_with_its_decision(serve: Serve, engine: Any, traces: Traces) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o9", "amount": 900}, call_id="c"), turn.text("done"))
    guard = refund_and_delete_guard(server, engine, traces)
    result = guard.run_with_approval(messages=USER, model="gpt-4.1",
                                     on_approval_required=lambda ctx: {"resolution": "approved", "approver": "alice"})  # fmt: skip
    assert result["execution"]["last"]["status"] == "executed"
    evaluate = traces.one("clearance.evaluate")
    assert evaluate.attributes["clearance.result"] == "requires_approval"
    assert evaluate.attributes["clearance.matched_rules"] == ("refunds",)
    tool_call = traces.one("clearance.tool_call")
    assert tool_call.attributes["clearance.request_id"] == evaluate.attributes["clearance.request_id"]


@AGENT_SPANS_ONLY
def test_check_tool_is_traced_too(serve: Serve, engine: Any, traces: Traces) -> None:
    guard = refund_and_delete_guard(serve(), engine, traces)
    view = guard.check_tool("delete_account", {"account_id": "a1"})
    span = traces.one("clearance.evaluate")
    assert span.attributes["clearance.request_id"] == view["request_id"]
    assert span.attributes["clearance.result"] == "blocked"
    assert traces.named("clearance.tool_call") == []


TRACE_ID, CALLER = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER}-01"


def test_the_server_traces_each_decision(tmp_path: Path, traces: Traces) -> None:
    """The HTTP API's side: one span per decision, in the caller's trace (``traceparent``), with the
    verdict. Which kind depends on whether FastAPI traces the request itself (it does once a global
    provider exists, which an earlier test may have installed): see the next test for both cases."""
    from clearance.server import ServerThread

    eng = Engine(tmp_path / "server.db")
    eng.apply_rules(parse_rules("version: 1\nrules:\n  - id: never-delete\n    tool: delete_account\n    effect: block\n"))
    with ServerThread(eng) as server:
        _, token = server.app.state.keys.create("agent", "agent", identity="agent-7")
        reply = httpx.post(f"{server.url}/v1/decisions", headers={"Authorization": f"Bearer {token}",
                           "traceparent": TRACEPARENT},
                           json={"tool": "delete_account", "arguments": {"account_id": "a1"}, "domain": "shop"})  # fmt: skip
        assert reply.status_code == 200, reply.text
        # The batch route decides (and traces) each of its actions.
        batch = httpx.post(f"{server.url}/v1/decisions/batch", headers={"Authorization": f"Bearer {token}"},
                           json={"actions": [{"tool": "refund_payment", "arguments": {}, "domain": "shop"}] * 2})  # fmt: skip
        assert batch.status_code == 200, batch.text
    first, *rest = traces.named("clearance.evaluate")
    assert f"{first.context.trace_id:032x}" == TRACE_ID
    if f"{first.parent.span_id:016x}" == CALLER:
        assert first.kind is SpanKind.SERVER  # nothing else traces the request: ours is its SERVER span
    else:
        assert first.kind is SpanKind.INTERNAL  # inside FastAPI's own SERVER span
    assert first.attributes["clearance.request_id"] == reply.json()["request_id"]
    assert first.attributes["clearance.actor"] == "agent-7"  # bound from the key
    assert first.attributes["clearance.result"] == "blocked"
    assert first.attributes["clearance.matched_rules"] == ("never-delete",)
    assert [s.attributes["clearance.request_id"] for s in rest] == [d["request_id"] for d in batch.json()["decisions"]]
    assert all(s.context.trace_id != first.context.trace_id for s in rest)
    assert all((s.kind is SpanKind.SERVER) == (s.parent is None) for s in rest)


def test_remote_engine_carries_the_callers_trace_to_the_server(tmp_path: Path, traces: Traces) -> None:
    """A decision made through RemoteEngine (blocking and asyncio) is traced on the server inside
    the agent's trace, under the span the agent had open; outside any span nothing is sent."""
    from clearance.remote import RemoteEngine
    from clearance.server import ServerThread

    seen: list[str | None] = []
    with ServerThread(Engine(tmp_path / "remote.db")) as server:
        _, token = server.app.state.keys.create("agent", "agent", identity="agent-7")
        remote = RemoteEngine(server.url, token)
        remote._client.event_hooks["request"].append(lambda r: seen.append(r.headers.get("traceparent")))
        action = {"tool": "refund_payment", "arguments": {"order_id": "o1"}, "domain": "shop"}
        with traces.tracer.start_as_current_span("agent.step") as step:
            blocking = remote.evaluate(action)

        async def decide() -> Any:
            aremote = remote.aio()
            aremote._client.event_hooks["request"].append(lambda r: _note(seen, r))
            try:
                with traces.tracer.start_as_current_span("agent.async_step") as astep:
                    return astep, await aremote.evaluate(action)
            finally:
                await aremote.aclose()

        astep, nonblocking = asyncio.run(decide())
        untraced = remote.evaluate(action)
        remote.close()
    spans = {s.attributes["clearance.request_id"]: s for s in traces.named("clearance.evaluate")}
    for caller, decision in ((step, blocking), (astep, nonblocking)):
        server_span = spans[decision.request_id]
        assert server_span.context.trace_id == caller.get_span_context().trace_id
        assert server_span.parent is not None and server_span.parent.span_id == caller.get_span_context().span_id
    assert spans[untraced.request_id].parent is None
    assert seen[0] is not None and seen[1] is not None and seen[2] is None


async def _note(seen: list[str | None], request: httpx.Request) -> None:
    seen.append(request.headers.get("traceparent"))


_SERVER_CHILD = """
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from clearance import Engine, telemetry
from clearance.server import ServerThread

def recording():
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider

def path_to_caller(spans, span):
    # From our span up to the caller's: the kinds on the way, which must hold exactly one SERVER.
    by_id, kinds = {{s.context.span_id: s for s in spans}}, []
    while True:
        assert f"{{span.context.trace_id:032x}}" == {trace_id!r}, "left the caller's trace"
        kinds.append(span.kind)
        if f"{{span.parent.span_id:016x}}" == {caller!r}:
            return kinds
        span = by_id[span.parent.span_id]

with ServerThread(Engine({db!r})) as server:
    _, token = server.app.state.keys.create("agent", "agent", identity="agent-7")
    def decide():
        reply = httpx.post(server.url + "/v1/decisions", json={{"tool": "t", "arguments": {{}}, "domain": "d"}},
                           headers={{"Authorization": "Bearer " + token, "traceparent": {traceparent!r}}})
        assert reply.status_code == 200, reply.text
        return reply.json()["request_id"]

    # 1. Our provider only (no global one, so FastAPI does not trace): ours is the SERVER span.
    ours, provider = recording()
    telemetry.use_tracer_provider(provider)
    rid = decide()
    [span] = ours.get_finished_spans()
    assert span.name == "clearance.evaluate" and span.attributes["clearance.request_id"] == rid
    assert path_to_caller([span], span) == [SpanKind.SERVER]

    # 2. A global provider: the HTTP layer may trace the request too; still one SERVER span.
    telemetry.use_tracer_provider(None)
    every, provider = recording()
    trace.set_tracer_provider(provider)
    rid = decide()
    spans = every.get_finished_spans()
    [span] = [s for s in spans if s.name == "clearance.evaluate"]
    assert span.attributes["clearance.request_id"] == rid
    kinds = path_to_caller(spans, span)
    assert kinds.count(SpanKind.SERVER) == 1 and kinds[-1] is SpanKind.SERVER, kinds
    print("kinds", [k.name for k in kinds])
"""


def test_one_server_span_per_decision_request_whoever_traces_it(tmp_path: Path) -> None:
    """In a fresh interpreter (the global provider can be set only once): with no one else tracing the
    request our span is its SERVER span; once FastAPI traces it, ours nests inside and is INTERNAL."""
    code = _SERVER_CHILD.format(db=str(tmp_path / "s.db"), trace_id=TRACE_ID, caller=CALLER, traceparent=TRACEPARENT)
    out = _run_child(code)
    assert "kinds" in out


# -- in a fresh interpreter: no OpenTelemetry at all, and a provider installed late ---------------
_CHILD = """
import sys
{prelude}
from clearance import Engine, GuardedOpenAI, parse_rules, telemetry
engine = Engine({db!r})
engine.apply_rules(parse_rules("version: 1\\nrules:\\n  - id: never-delete\\n    tool: delete_account\\n    effect: block\\n"))
guard = GuardedOpenAI(openai_api_key="test", base_url={base_url!r}, engine=engine, actor="agent-7", domain="shop")
ran = []
guard.tool("refund_payment", lambda order_id, amount: ran.append(order_id) or {{"ok": True}},
           parameters_schema={{"type": "object", "properties": {{"order_id": {{"type": "string"}}, "amount": {{"type": "number"}}}},
                              "required": ["order_id", "amount"], "additionalProperties": False}})
def run():
    result = guard.run(messages=[{{"role": "user", "content": "refund"}}], model="gpt-4.1")
    assert result["status"] == "completed" and result["execution"]["last"]["status"] == "executed", result
{body}
guard.close()
print("ran", ran)
"""

_BLOCK_OTEL = """
class _NoOtel:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoOtel())
"""


def _run_child(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_without_opentelemetry_the_guard_works_and_never_imports_it(serve: Serve, tmp_path: Path) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o1", "amount": 1}, call_id="c"), turn.text("ok"))
    body = """
run()
try:
    import opentelemetry  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the import block did not hold")
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "clearance imported opentelemetry"
assert telemetry.evaluate_span(None) is telemetry.NO_SPAN
"""
    out = _run_child(_CHILD.format(prelude=_BLOCK_OTEL, db=str(tmp_path / "c.db"), base_url=server.base_url, body=body))
    assert "ran ['o1']" in out
    assert len(server.requests) == 2


def test_a_global_provider_installed_after_import_is_picked_up(serve: Serve, tmp_path: Path) -> None:
    """Set-up order varies: before a provider exists nothing is built (one shared no-op comes back)
    and the first run traces nothing; once one is installed, the next run is traced."""
    server = serve(turn.function_call("refund_payment", {"order_id": "o1", "amount": 1}, call_id="c1"), turn.text("ok"),
                   turn.function_call("refund_payment", {"order_id": "o2", "amount": 2}, call_id="c2"), turn.text("ok"))  # fmt: skip
    body = """
run()
from clearance.model import Action
off = telemetry.evaluate_span(Action(tool="t", arguments={}, actor="a", domain="d"))
assert off is telemetry.NO_SPAN and telemetry.tool_call_span("t") is off, "no provider yet: one shared no-op"
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
run()
print("spans", sorted(s.name for s in exporter.get_finished_spans()))
"""
    out = _run_child(_CHILD.format(prelude="", db=str(tmp_path / "c.db"), base_url=server.base_url, body=body))
    assert "spans ['clearance.evaluate', 'clearance.tool_call']" in out
    assert "ran ['o1', 'o2']" in out
