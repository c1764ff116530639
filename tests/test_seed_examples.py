"""The bighub-openai README examples run on clearance with only the import changed.

The snippets below are copied verbatim from the two README versions in ../shared/seeds/
(000: bighub-openai 3.0.0, 001: bighub-openai 0.2.4; ``test_snippets_are_verbatim`` checks
that, when the seeds are present). Before running one, ``adapt`` makes the only changes a
user migrating to clearance would make:

- ``from bighub_openai import X`` becomes ``from clearance import X`` (3.0.0's class names
  ``BighubOpenAI``/``AsyncBighubOpenAI`` are imported under those names: ``from clearance
  import GuardedOpenAI as BighubOpenAI``);
- the ``bighub_api_key=...`` argument line is dropped (there is no hosted backend);
- where a README elides arguments as ``GuardedOpenAI(..., on_decision=...)``, the ``...`` is
  filled with the quickstart's arguments.

The environment is what a user would have: ``OPENAI_BASE_URL`` points at the scripted
server, ``OPENAI_API_KEY`` is a dummy, and the engine is the default one, from ``CLEARANCE_DB``
(a file in tmp_path, with a refunds policy applied first). Top-level ``await`` snippets run as
one asyncio program.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from adapter_support import tool_outputs

from clearance import Engine, parse_rules
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

POLICY = """
version: 1
rules:
  - id: refunds
    domain: customer_transactions
    tool: refund_payment
    max_value: 10000
    require_approval_above: 1000
"""

# ---------------------------------------------------------------------------- the snippets (verbatim)

# 000 (bighub-openai 3.0.0) "Quickstart"
QUICKSTART_300 = '''
import os
from bighub_openai import BighubOpenAI

def refund_payment(order_id: str, amount: float) -> dict:
    return {"ok": True, "order_id": order_id, "amount": amount}

guard = BighubOpenAI(
    openai_api_key=os.getenv("OPENAI_API_KEY"),
    bighub_api_key=os.getenv("BIGHUB_API_KEY"),
    actor="AI_AGENT_001",
    domain="customer_transactions",
)

guard.tool(
    "refund_payment",
    refund_payment,
    value_from_args=lambda a: a["amount"],
)

response = guard.run(
    messages=[{"role": "user", "content": "Refund order ord_123 for 199.99"}],
    model="gpt-4.1",
)

print(response["execution"]["last"]["status"])
# executed | blocked | approval_required
'''

# 000 "Async"
ASYNC_300 = '''
from bighub_openai import AsyncBighubOpenAI

guard = AsyncBighubOpenAI(
    openai_api_key=os.getenv("OPENAI_API_KEY"),
    bighub_api_key=os.getenv("BIGHUB_API_KEY"),
    actor="AI_AGENT_001",
    domain="customer_transactions",
)

response = await guard.run(
    messages=[{"role": "user", "content": "Refund order ord_123 for 199.99"}],
    model="gpt-4.1",
)
'''

# 000 "Human-in-the-Loop Approvals"
APPROVALS_300 = '''
result = guard.run_with_approval(
    messages=[{"role": "user", "content": "Refund order ord_123 for 5000"}],
    model="gpt-4.1",
    on_approval_required=lambda ctx: {
        "resolution": "approved",
        "comment": "approved by on-call",
    },
)
'''

# 001 (bighub-openai 0.2.4) "Quickstart (5 lines)"
QUICKSTART_024 = '''
import os
from bighub_openai import GuardedOpenAI

def refund_payment(order_id: str, amount: float) -> dict:
    return {"ok": True, "order_id": order_id, "amount": amount}

guard = GuardedOpenAI(
    openai_api_key=os.getenv("OPENAI_API_KEY"),
    bighub_api_key=os.getenv("BIGHUB_API_KEY"),
    actor="AI_AGENT_001",
    domain="customer_transactions",
)

guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])

response = guard.run(
    messages=[
        {"role": "user", "content": "Refund order ord_123 for 199.99"},
    ],
    model="gpt-4.1",
)

print(response)
'''

# 001 "Async quickstart"
ASYNC_QUICKSTART_024 = '''
import os
from bighub_openai import AsyncGuardedOpenAI

guard = AsyncGuardedOpenAI(
    openai_api_key=os.getenv("OPENAI_API_KEY"),
    bighub_api_key=os.getenv("BIGHUB_API_KEY"),
    actor="AI_AGENT_001",
    domain="customer_transactions",
)
'''

# 001 "Audit hook"
AUDIT_HOOK_024 = '''
def log_decision(event: dict) -> None:
    # Avoid dumping full payloads/secrets to logs.
    minimal = {
        "trace_id": event.get("trace_id"),
        "request_id": event.get("request_id"),
        "event_id": event.get("event_id"),
        "allowed": event.get("allowed"),
    }
    print(minimal)

guard = GuardedOpenAI(..., on_decision=log_decision)
'''

# 001 "Silent mode"
SILENT_024 = '''
decision = guard.check_tool("refund_payment", {"order_id": "ord_123", "amount": 199.0})
'''

# 001 "Approval loop helper" (sync, then async)
APPROVAL_LOOP_024 = '''
result = guard.run_with_approval(
    messages=[{"role": "user", "content": "Refund order ord_123 for 5000"}],
    model="gpt-4.1",
    on_approval_required=lambda ctx: {
        "resolution": "approved",
        "comment": "approved by on-call",
    },
)

print(result["approval_loop"])
'''
ASYNC_APPROVAL_LOOP_024 = '''
result = await guard.run_with_approval(
    messages=[{"role": "user", "content": "Refund order ord_123 for 5000"}],
    model="gpt-4.1",
    on_approval_required=lambda ctx: {
        "resolution": "approved",
        "comment": "approved by on-call",
    },
)

print(result["approval_loop"])
'''

# 001 "Provider resilience knobs"
RESILIENCE_024 = '''
import os
guard = GuardedOpenAI(
    openai_api_key=os.getenv("OPENAI_API_KEY"),
    bighub_api_key=os.getenv("BIGHUB_API_KEY"),
    actor="AI_AGENT_001",
    domain="customer_transactions",
    provider_timeout_seconds=20,
    provider_max_retries=3,
    provider_retry_backoff_seconds=0.2,
    provider_retry_max_backoff_seconds=2.0,
    provider_retry_jitter_seconds=0.15,
    provider_circuit_breaker_failures=5,
    provider_circuit_breaker_reset_seconds=30,
)
'''

# 001 "Future memory ingest"
MEMORY_024 = '''
guard = GuardedOpenAI(..., memory_enabled=True, memory_source="openai_adapter")
'''

# 001 "Fail Modes" has no code, only the two settings; this is the quickstart guard with them.
FAIL_MODE_ARGS = {"closed": 'fail_mode="closed"', "open": 'fail_mode="open"'}

VERBATIM = {
    "000": [QUICKSTART_300, ASYNC_300, APPROVALS_300],
    "001": [QUICKSTART_024, ASYNC_QUICKSTART_024, AUDIT_HOOK_024, SILENT_024, APPROVAL_LOOP_024,
            ASYNC_APPROVAL_LOOP_024, RESILIENCE_024, MEMORY_024],
}  # fmt: skip

#: What the quickstart passes, for snippets that write ``GuardedOpenAI(..., x=y)``.
QUICKSTART_ARGS = (
    'openai_api_key=os.getenv("OPENAI_API_KEY"), actor="AI_AGENT_001", domain="customer_transactions"'
)
_NAMES = {"BighubOpenAI": "GuardedOpenAI", "AsyncBighubOpenAI": "AsyncGuardedOpenAI",
          "GuardedOpenAI": "GuardedOpenAI", "AsyncGuardedOpenAI": "AsyncGuardedOpenAI"}  # fmt: skip


def adapt(code: str) -> str:
    """The migration: clearance import, no bighub_api_key, ``...`` placeholders filled."""

    def imp(m: re.Match[str]) -> str:
        names = []
        for name in (n.strip() for n in m.group(1).split(",")):
            ours = _NAMES[name]
            names.append(ours if ours == name else f"{ours} as {name}")
        return "from clearance import " + ", ".join(names)

    code = re.sub(r"from bighub_openai import ([\w, ]+)", imp, code)
    code = "\n".join(line for line in code.splitlines() if "bighub_api_key" not in line)
    return re.sub(r"(GuardedOpenAI|BighubOpenAI)\(\.\.\.,", rf"\1({QUICKSTART_ARGS},", code)


def run_program(*snippets: str, ns: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run adapted snippets as one program (top-level ``await`` allowed) and return its namespace."""
    ns = ns if ns is not None else {}
    ns.setdefault("__name__", "__seed__")
    source = "\n".join(adapt(s) for s in snippets)
    code = compile(source, "<seed example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)  # noqa: S307 - the README's own code
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return ns


# ---------------------------------------------------------------------------- environment


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Serve) -> Iterator[Callable[..., ScriptedOpenAI]]:
    """``env(*turns)`` -> the scripted server that OPENAI_BASE_URL points at; CLEARANCE_DB in tmp_path."""
    db = tmp_path / "clearance.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(POLICY))
    monkeypatch.setenv("CLEARANCE_DB", str(db))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-dummy")
    monkeypatch.delenv("BIGHUB_API_KEY", raising=False)
    for var in ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_CUSTOM_HEADERS"):
        monkeypatch.delenv(var, raising=False)

    def make(*turns: Any) -> ScriptedOpenAI:
        server = serve(*turns)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        return server

    yield make


def refund_call(amount: float, order_id: str = "ord_123", call_id: str = "call_1") -> Any:
    return turn.function_call("refund_payment", {"order_id": order_id, "amount": amount}, call_id=call_id)


def db_file() -> Path:
    import os

    return Path(os.environ["CLEARANCE_DB"])


# ---------------------------------------------------------------------------- the examples


def test_snippets_are_verbatim() -> None:
    if not SEEDS.is_dir():
        pytest.skip(f"seeds not found at {SEEDS}")

    def norm(text: str) -> str:
        return " ".join(text.split())

    for prefix, snippets in VERBATIM.items():
        [path] = SEEDS.glob(f"{prefix}_*.txt")
        seed = norm(path.read_text())
        for snippet in snippets:
            assert norm(snippet) in seed, f"not verbatim from {path.name}:\n{snippet}"


def test_quickstart_300(env: Callable[..., ScriptedOpenAI], capsys: pytest.CaptureFixture[str]) -> None:
    server = env(refund_call(199.99), turn.text("Refunded ord_123."))
    ns = run_program(QUICKSTART_300)
    assert capsys.readouterr().out.strip() == "executed"
    assert ns["response"]["output_text"] == "Refunded ord_123."
    # it really went to OPENAI_BASE_URL, with OPENAI_API_KEY, and the tool ran
    assert len(server.requests) == 2
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-dummy"
    assert tool_outputs(server.requests[1].json) == {"call_1": {"ok": True, "order_id": "ord_123", "amount": 199.99}}
    # and the decision is in the default engine's database (CLEARANCE_DB)
    with sqlite3.connect(db_file()) as con:
        rows = con.execute("SELECT tool, actor, domain, value, result FROM decisions").fetchall()
    assert rows == [("refund_payment", "AI_AGENT_001", "customer_transactions", 199.99, "allowed")]


def test_quickstart_024_and_the_response_shape(env: Callable[..., ScriptedOpenAI],
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    server = env(refund_call(199.99), turn.text("Done."))
    ns = run_program(QUICKSTART_024)
    printed = capsys.readouterr().out
    assert "'llm_response'" in printed and "'execution'" in printed
    response = ns["response"]
    # "Response Shape" (000) / "run(...) returns" (001)
    assert {"llm_response", "execution"} <= set(response)
    assert isinstance(response["llm_response"], dict) and response["llm_response"]["object"] == "response"
    assert set(response["execution"]) == {"events", "last"}
    last = response["execution"]["last"]
    assert last["tool"] == "refund_payment" and last["status"] == "executed"
    decision = last["decision"]
    assert decision["allowed"] is True and decision["result"] == "allowed" and decision["requires_approval"] is False
    assert isinstance(decision["reason"], str) and decision["request_id"].startswith("req_")
    assert 0 <= decision["risk_score"] <= 1
    # "Responses API compatibility" (001): store=false by default, flat function tools, call_id echoed
    first, second = (r.json for r in server.requests)
    assert first["store"] is False
    assert first["tools"][0]["type"] == "function" and first["tools"][0]["name"] == "refund_payment"
    assert "function" not in first["tools"][0] and first["tools"][0]["strict"] is True
    assert [i for i in second["input"] if i.get("type") == "function_call_output"][0]["call_id"] == "call_1"


@pytest.mark.parametrize("amount, status", [(199.99, "executed"), (20000, "blocked"), (5000, "approval_required")])
def test_quickstart_status_values(env: Callable[..., ScriptedOpenAI], capsys: pytest.CaptureFixture[str],
                                  amount: float, status: str) -> None:  # fmt: skip
    """``# executed | blocked | approval_required``: each one, from the same snippet."""
    snippet = QUICKSTART_300.replace("for 199.99", f"for {amount}")
    env(refund_call(amount), *([turn.text("ok")] if status != "approval_required" else []))
    run_program(snippet)
    assert capsys.readouterr().out.strip() == status


def test_approvals_300(env: Callable[..., ScriptedOpenAI]) -> None:
    server = env(refund_call(5000, call_id="call_big"), turn.text("Refund of 5000 done after approval."))
    ns = run_program(QUICKSTART_300.replace("for 199.99", "for 5000").split("response = guard.run(")[0],
                     APPROVALS_300)  # fmt: skip
    result = ns["result"]
    assert result["status"] == "completed" and result["output_text"] == "Refund of 5000 done after approval."
    assert [e["status"] for e in result["execution"]["events"]] == ["approval_required", "executed"]
    assert result["approval_loop"][0]["resolution"] == "approved"
    assert result["approval_loop"][0]["comment"] == "approved by on-call"
    assert tool_outputs(server.requests[1].json)["call_big"]["amount"] == 5000


def test_approval_loop_024_then_resume_after_approval(env: Callable[..., ScriptedOpenAI],
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    env(refund_call(5000), turn.text("Done."), refund_call(5000, call_id="call_2"), turn.text("Done again."))
    ns = run_program(QUICKSTART_024.split("response = guard.run(")[0], APPROVAL_LOOP_024)
    printed = capsys.readouterr().out
    assert "'resolution': 'approved'" in printed and "'comment': 'approved by on-call'" in printed
    assert ns["result"]["output_text"] == "Done."
    # the other helper: resolve elsewhere, then resume_after_approval
    guard = ns["guard"]
    pending = guard.run(messages=[{"role": "user", "content": "Refund order ord_123 for 5000"}], model="gpt-4.1")
    assert pending["status"] == "approval_required"
    approval_id = pending["pending_approvals"][0]["approval_id"]
    guard.engine.resolve_approval(approval_id, "approved", approver="on-call")
    resumed = guard.resume_after_approval(approval_id)
    assert resumed["output_text"] == "Done again." and resumed["execution"]["last"]["status"] == "executed"


def test_audit_hook_024(env: Callable[..., ScriptedOpenAI], capsys: pytest.CaptureFixture[str]) -> None:
    env(turn.function_calls([("refund_payment", {"order_id": "ord_1", "amount": 10}),
                             ("refund_payment", {"order_id": "ord_2", "amount": 20000})]),
        turn.text("One refunded, one refused."))  # fmt: skip
    ns = run_program(QUICKSTART_024.split("response = guard.run(")[0].replace("print(response)", ""),
                     AUDIT_HOOK_024,
                     'guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])\n'
                     'response = guard.run(messages=[{"role": "user", "content": "Refund both"}], model="gpt-4.1")')  # fmt: skip
    lines = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    trace_id = ns["response"]["trace_id"]
    for line in lines:
        assert set(line) == {"trace_id", "request_id", "event_id", "allowed"}
        assert line["trace_id"] == trace_id and line["request_id"].startswith("req_")
        assert line["event_id"].startswith("evt_")
    assert sorted(line["allowed"] for line in lines) == [False, True]


def test_silent_mode_024(env: Callable[..., ScriptedOpenAI]) -> None:
    server = env()
    ns = run_program(QUICKSTART_024.split("response = guard.run(")[0], SILENT_024)
    decision = ns["decision"]
    assert decision["allowed"] is True and decision["result"] == "allowed"
    assert server.requests == []  # nothing sent to OpenAI, nothing run
    with sqlite3.connect(db_file()) as con:
        [(request_id, result)] = con.execute("SELECT request_id, result FROM decisions").fetchall()
        [(status,)] = con.execute("SELECT status FROM executions").fetchall()
    assert (request_id, result, status) == (decision["request_id"], "allowed", "not_run")


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_fail_modes(env: Callable[..., ScriptedOpenAI], mode: str) -> None:
    """The quickstart guard with ``fail_mode=``; the policy check then fails (its table is gone)."""
    server = env(refund_call(199.99), turn.text("ok"))
    setup = QUICKSTART_024.split("response = guard.run(")[0].replace(
        'domain="customer_transactions",\n)', f'domain="customer_transactions",\n    {FAIL_MODE_ARGS[mode]},\n)')
    assert FAIL_MODE_ARGS[mode] in setup
    ns = run_program(setup)
    with sqlite3.connect(db_file()) as con:
        con.execute("ALTER TABLE decisions RENAME TO decisions_unavailable")
    response = ns["guard"].run(messages=[{"role": "user", "content": "Refund order ord_123 for 199.99"}],
                               model="gpt-4.1")  # fmt: skip
    last = response["execution"]["last"]
    told = tool_outputs(server.requests[1].json)["call_1"]
    if mode == "closed":
        assert last["status"] == "blocked" and "failing closed" in last["decision"]["reason"]
        assert told["status"] == "blocked" and "ok" not in told  # the README's refund_payment did not run
    else:
        assert told == {"ok": True, "order_id": "ord_123", "amount": 199.99}  # it ran
        assert last["status"] == "executed" and last["fail_open"] is True


def test_resilience_knobs_024(env: Callable[..., ScriptedOpenAI]) -> None:
    server = env(turn.error(503), turn.error(429), refund_call(199.99), turn.error(500), turn.text("ok"),
                 turn.error(400))  # fmt: skip
    ns = run_program(QUICKSTART_024.split("guard = GuardedOpenAI(")[0], RESILIENCE_024,
                     'guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])')  # fmt: skip
    guard = ns["guard"]
    assert guard.client.timeout == 20 and guard.client.max_retries == 0
    response = guard.run(messages=[{"role": "user", "content": "Refund order ord_123 for 199.99"}], model="gpt-4.1")
    assert response["output_text"] == "ok" and len(server.requests) == 5
    assert response["execution"]["last"]["status"] == "executed"
    # "Non-retryable errors (e.g. BadRequestError, AuthenticationError) fail immediately."
    with pytest.raises(openai.BadRequestError):
        guard.run(messages=[{"role": "user", "content": "hi"}], model="gpt-4.1")
    assert len(server.requests) == 6


def test_memory_ingest_settings_024(env: Callable[..., ScriptedOpenAI]) -> None:
    env(refund_call(199.99), turn.text("ok"))
    ns = run_program(QUICKSTART_024.split("guard = GuardedOpenAI(")[0], MEMORY_024,
                     'guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])\n'
                     'response = guard.run(messages=[{"role": "user", "content": "Refund"}], model="gpt-4.1")')  # fmt: skip
    event = ns["response"]["execution"]["last"]
    assert event["status"] == "executed"
    # "Each event includes idempotency/versioning metadata"
    assert event["event_id"] and event["seq"] == 1 and event["schema_version"] == 1
    assert event["source_version"].startswith("clearance-openai@")
    # the source label is kept with the decision
    with sqlite3.connect(db_file()) as con:
        [(context,)] = con.execute("SELECT context FROM decisions").fetchall()
    assert json.loads(context) == {"memory_source": "openai_adapter"}


def test_async_300(env: Callable[..., ScriptedOpenAI]) -> None:
    env(turn.text("Async hello."))
    ns = run_program("import os", ASYNC_300)
    assert ns["response"]["output_text"] == "Async hello."


def test_async_024_quickstart_and_approval_loop(env: Callable[..., ScriptedOpenAI],
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    server = env(refund_call(5000), turn.text("Done."))
    ns = run_program(
        ASYNC_QUICKSTART_024,
        QUICKSTART_024.split("guard = GuardedOpenAI(")[0].replace("from bighub_openai import GuardedOpenAI", ""),
        'guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])',
        ASYNC_APPROVAL_LOOP_024,
    )
    assert "'resolution': 'approved'" in capsys.readouterr().out
    assert ns["result"]["output_text"] == "Done." and ns["result"]["execution"]["last"]["status"] == "executed"
    assert len(server.requests) == 2


def test_base_url_comes_from_the_environment(env: Callable[..., ScriptedOpenAI]) -> None:
    """The guard passes no base_url of its own, so the SDK reads OPENAI_BASE_URL."""
    server = env()
    ns = run_program(QUICKSTART_024.split("guard.tool(")[0])
    assert str(ns["guard"].client.base_url).rstrip("/") == server.base_url


# ---------------------------------------------------------------------------- clearance.compat.bighub
# The same README programs, with ONLY the import line changed (bighub_api_key=... stays):
# ``from bighub_openai import X`` -> ``from clearance.compat.bighub import X``.


def only_import(code: str) -> str:
    out = code.replace("from bighub_openai import", "from clearance.compat.bighub import")
    assert [a for a in out.splitlines() if a not in code.splitlines()] == [
        line.replace("bighub_openai", "clearance.compat.bighub") for line in code.splitlines() if "bighub_openai" in line
    ], "only import lines differ"
    return out


def run_compat(*snippets: str) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "__seed__"}
    code = compile("\n".join(only_import(s) for s in snippets), "<seed example>", "exec",
                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)  # fmt: skip
    result = eval(code, ns)  # noqa: S307 - the README's own code
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return ns


def assert_seed_shape(response: dict[str, Any], status: str) -> None:
    """"Response Shape" (000): llm_response, execution.events/last, the decision's key signals."""
    assert isinstance(response["llm_response"], dict) and set(response["execution"]) == {"events", "last"}
    last = response["execution"]["last"]
    assert last["status"] == status and last["tool"] == "refund_payment"
    decision = last["decision"]
    assert {"allowed", "result", "reason", "request_id", "requires_approval", "risk_score"} <= set(decision)
    assert decision["request_id"].startswith("req_") and 0 <= decision["risk_score"] <= 1


def test_compat_quickstart_300_only_the_import_changed(env: Callable[..., ScriptedOpenAI],
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    server = env(refund_call(199.99), turn.text("Refunded ord_123."))
    ns = run_compat(QUICKSTART_300)
    assert capsys.readouterr().out.strip() == "executed"
    assert_seed_shape(ns["response"], "executed")
    assert ns["response"]["execution"]["last"]["decision"]["result"] == "allowed"
    assert tool_outputs(server.requests[1].json) == {"call_1": {"ok": True, "order_id": "ord_123", "amount": 199.99}}
    with sqlite3.connect(db_file()) as con:  # no BIGHUB_API_KEY, no URL: the embedded engine (CLEARANCE_DB)
        assert con.execute("SELECT tool, result FROM decisions").fetchall() == [("refund_payment", "allowed")]


def test_compat_approval_loop_300_only_the_import_changed(env: Callable[..., ScriptedOpenAI]) -> None:
    server = env(refund_call(5000, call_id="call_big"), turn.text("Refund of 5000 done after approval."))
    ns = run_compat(QUICKSTART_300.replace("for 199.99", "for 5000").split("response = guard.run(")[0], APPROVALS_300)
    result = ns["result"]
    assert [e["status"] for e in result["execution"]["events"]] == ["approval_required", "executed"]
    assert_seed_shape(result, "executed")
    assert result["approval_loop"][0]["resolution"] == "approved"
    assert result["approval_loop"][0]["comment"] == "approved by on-call"
    assert tool_outputs(server.requests[1].json)["call_big"]["amount"] == 5000


def test_compat_024_names_and_async_approval_loop(env: Callable[..., ScriptedOpenAI],
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    env(refund_call(5000), turn.text("Done."))
    ns = run_compat(
        ASYNC_QUICKSTART_024,
        QUICKSTART_024.split("guard = GuardedOpenAI(")[0].replace("from bighub_openai import GuardedOpenAI", ""),
        'guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])',
        ASYNC_APPROVAL_LOOP_024,
    )
    assert "'resolution': 'approved'" in capsys.readouterr().out
    assert_seed_shape(ns["result"], "executed")


def test_compat_quickstart_on_a_clearance_server(env: Callable[..., ScriptedOpenAI], live: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """BIGHUB_API_KEY (a key of the server) and BIGHUB_BASE_URL: decisions are made by the server."""
    from clearance.remote import RemoteEngine

    env(refund_call(199.99), turn.text("Refunded ord_123."))
    monkeypatch.setenv("BIGHUB_API_KEY", live.tokens["admin"])
    monkeypatch.setenv("BIGHUB_BASE_URL", live.url)
    ns = run_compat(QUICKSTART_300)
    assert isinstance(ns["guard"].engine, RemoteEngine) and ns["guard"].engine.url == live.url
    assert_seed_shape(ns["response"], "executed")
    request_id = ns["response"]["execution"]["last"]["decision"]["request_id"]
    with sqlite3.connect(live.db) as con:
        assert con.execute("SELECT tool FROM decisions WHERE request_id = ?", (request_id,)).fetchall() == [("refund_payment",)]
    with sqlite3.connect(db_file()) as con:
        assert con.execute("SELECT count(*) FROM decisions").fetchone() == (0,), "nothing decided locally"
    ns["guard"].close()


def test_compat_key_without_a_server_is_a_clear_error(env: Callable[..., ScriptedOpenAI],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from clearance.compat.bighub import BighubOpenAI

    env()
    monkeypatch.setenv("BIGHUB_API_KEY", "bh_live_123")
    with pytest.raises(ValueError, match="bighub_api_key is set but no clearance server is named"):
        run_compat(QUICKSTART_300)
    with pytest.raises(ValueError, match="no API key"):
        BighubOpenAI(openai_api_key="k", bighub_base_url="http://127.0.0.1:9")
    with Engine(db_file()) as engine, pytest.raises(ValueError, match="not both"):
        BighubOpenAI(openai_api_key="k", bighub_api_key="x", engine=engine)
