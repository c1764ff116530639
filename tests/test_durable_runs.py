"""When a run returns, every execution of it is in the store, however slow the store is; and a
guard with ``memory_enabled=False`` leaves no precedent behind.

Real parts: a SQLite file, the real ``openai`` SDK against the scripted OpenAI server, and for
the remote engine a real uvicorn server on loopback whose execution records answer slowly.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from server_support import RULES, make_keys

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI, parse_rules
from clearance.remote import RemoteEngine
from clearance.testing import ScriptedOpenAI, turn

SLOW_SECONDS = 1.0


def refund(order_id: str, amount: float) -> dict[str, Any]:
    return {"ok": True, "order_id": order_id}


def refund_calls(*amounts: float) -> Any:
    return turn.function_calls([("refund_payment", {"order_id": f"o{i}", "amount": a}) for i, a in enumerate(amounts)])


def executions(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT request_id, status FROM executions").fetchall())


class SlowRecords:
    """The app, with every execution record answered ``SLOW_SECONDS`` late (a busy server)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["path"].endswith("/execution") or scope["path"] == "/v1/executions/batch"):
            await asyncio.sleep(SLOW_SECONDS)
        await self.app(scope, receive, send)


@pytest.fixture
def slow_server(tmp_path: Path) -> Any:
    import uvicorn

    from clearance.server import create_app

    db = tmp_path / "slow.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    token = make_keys(engine)["agent"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(SlowRecords(create_app(engine)), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", token, db
    server.should_exit = True
    thread.join(10)
    sock.close()
    engine.close()


def test_remote_run_returns_after_its_executions_are_recorded(slow_server: Any) -> None:
    url, token, db = slow_server
    with ScriptedOpenAI([refund_calls(10, 20), turn.text("done")]) as openai_server, RemoteEngine(url, token) as remote:
        guard = GuardedOpenAI(engine=remote, base_url=openai_server.base_url, openai_api_key="k", actor="agent-7", domain="shop")
        guard.tool("refund_payment", refund)
        started = time.monotonic()
        result = guard.run(input="refund both", model="m")
        assert result["status"] == "completed"
        assert time.monotonic() - started >= SLOW_SECONDS  # it waited for the slow record
        ids = [e["request_id"] for e in result["execution"]["events"]]
        assert len(ids) == 2 and executions(db) == {i: "executed" for i in ids}


def test_async_remote_stream_returns_after_its_executions_are_recorded(slow_server: Any) -> None:
    url, token, db = slow_server

    async def main() -> list[dict[str, Any]]:
        with ScriptedOpenAI([refund_calls(30), turn.text("done")]) as openai_server:
            guard = AsyncGuardedOpenAI(engine=RemoteEngine(url, token).aio(), base_url=openai_server.base_url,
                                       openai_api_key="k", actor="agent-7", domain="shop")  # fmt: skip
            guard.tool("refund_payment", refund)
            return [e async for e in guard.run_stream(input="refund", model="m")]

    events = asyncio.run(main())
    final = events[-1]["response"]
    [request_id] = [e["request_id"] for e in final["execution"]["events"]]
    assert executions(db) == {request_id: "executed"}


def test_embedded_run_is_recorded_in_a_process_that_exits_at_once(tmp_path: Path) -> None:
    """The process leaves with ``os._exit`` right after ``run()``: nothing runs in the background
    after that, so what is in the file is what ``run()`` had written before returning."""
    db = tmp_path / "exit.db"
    with ScriptedOpenAI([refund_calls(10, 20), turn.text("done")]) as openai_server:
        script = textwrap.dedent(f"""
            import os, time
            from clearance import Engine, GuardedOpenAI

            class BusyEngine(Engine):  # a loaded machine: each write of records takes a second
                def record_executions(self, reports):
                    time.sleep({SLOW_SECONDS})
                    return super().record_executions(reports)

            guard = GuardedOpenAI(engine=BusyEngine({str(db)!r}), base_url={openai_server.base_url!r}, openai_api_key="k")
            def refund(order_id: str, amount: float) -> dict:
                return {{"ok": True}}

            guard.tool("refund_payment", refund)
            result = guard.run(input="refund both", model="m")
            print(",".join(e["request_id"] for e in result["execution"]["events"]), flush=True)
            os._exit(0)
        """)  # fmt: skip
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids = done.stdout.strip().split(",")
    assert len(ids) == 2 and executions(db) == {i: "executed" for i in ids}


def test_memory_disabled_guard_leaves_no_precedent(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "memory.db")
    with ScriptedOpenAI([t for _ in range(4) for t in (refund_calls(120), turn.text("ok"))]) as openai_server:
        guard = GuardedOpenAI(engine=engine, base_url=openai_server.base_url, openai_api_key="k", memory_enabled=False)
        guard.tool("refund_payment", refund, value_from_args=lambda a: a["amount"])
        for _ in range(4):
            [event] = guard.run(input="refund", model="m")["execution"]["events"]
            assert event["status"] == "executed"
            engine.report_outcome(event["request_id"], "harmful", severity=1.0, cost=120.0)
    # Decided, executed and audited as always ...
    assert len(engine.audit_events(type="outcome.reported")) == 4
    # ... and never a precedent: the same call from a guard that learns finds nothing behind it.
    decision = engine.evaluate({"tool": "refund_payment", "arguments": {"order_id": "o0", "amount": 120}, "value": 120})
    assert decision.precedents == [] and decision.evidence == 0.0
    engine.close()


def test_memory_enabled_guard_does_leave_precedents(tmp_path: Path) -> None:
    """The control for the test above: the same call from a learning guard is remembered."""
    engine = Engine(tmp_path / "memory.db")
    with ScriptedOpenAI([refund_calls(120), turn.text("ok")]) as openai_server:
        guard = GuardedOpenAI(engine=engine, base_url=openai_server.base_url, openai_api_key="k")
        guard.tool("refund_payment", refund, value_from_args=lambda a: a["amount"])
        [event] = guard.run(input="refund", model="m")["execution"]["events"]
        engine.report_outcome(event["request_id"], "harmful", severity=1.0, cost=120.0)
    decision = engine.evaluate({"tool": "refund_payment", "arguments": {"order_id": "o0", "amount": 120}, "value": 120})
    assert [p.request_id for p in decision.precedents] == [event["request_id"]]
    engine.close()


def test_a_run_whose_executions_cannot_be_recorded_raises(tmp_path: Path) -> None:
    """Not best effort: rather than return a run the store does not know ran, the run raises."""

    class Unrecording(Engine):
        def record_executions(self, reports: Any) -> Any:
            raise OSError("disk full")

    ran: list[str] = []

    def tool(order_id: str, amount: float) -> dict[str, Any]:
        ran.append(order_id)
        return {"ok": True}

    with ScriptedOpenAI([refund_calls(10), turn.text("done")]) as openai_server:
        guard = GuardedOpenAI(engine=Unrecording(tmp_path / "u.db"), base_url=openai_server.base_url, openai_api_key="k")
        guard.tool("refund_payment", tool)
        with pytest.raises(OSError, match="disk full"):
            guard.run(input="refund", model="m")
        assert ran == ["o0"] and len(openai_server.requests) == 1  # the model never heard the unrecorded result


@pytest.mark.parametrize("engine_kind", ["embedded", "remote"])
def test_proposals_refused_before_any_decision_are_audited(tmp_path: Path, engine_kind: str) -> None:
    """An unregistered tool, arguments that are not JSON, arguments that break the schema: no
    decision is made, and each leaves a proposal.refused event with the trace (issue 17, 11)."""
    from clearance.server import ServerThread

    engine = Engine(tmp_path / "p.db")
    turns = [turn.items({"type": "function_call", "call_id": "c1", "name": "wire\x1b[0m_money", "arguments": "{}",
                         "id": "fc_1", "status": "completed"},
                        {"type": "function_call", "call_id": "c2", "name": "refund_payment", "arguments": "{not json",
                         "id": "fc_2", "status": "completed"},
                        {"type": "function_call", "call_id": "c3", "name": "refund_payment",
                         "arguments": '{"order_id": 5}', "id": "fc_3", "status": "completed"}),
             turn.text("sorry")]  # fmt: skip
    with ScriptedOpenAI(turns) as openai_server, ServerThread(engine) as server:
        _, token = engine.keys.create("bot", "agent", identity="agent-7")
        used = engine if engine_kind == "embedded" else RemoteEngine(server.url, token)
        guard = GuardedOpenAI(engine=used, base_url=openai_server.base_url, openai_api_key="k", actor="agent-7", domain="shop")
        guard.tool("refund_payment", refund)
        result = guard.run(input="go", model="m")
    assert [e["status"] for e in result["execution"]["events"]] == ["failed", "failed", "failed"]
    refused = engine.audit_events(type="proposal.refused")
    assert [e.payload["tool"] for e in refused] == ["wire\\x1b[0m_money", "refund_payment", "refund_payment"]
    assert {e.trace_id for e in refused} == {result["trace_id"]} and {e.payload["actor"] for e in refused} == {"agent-7"}
    assert engine.audit_events(type="decision.made") == []
    engine.close()
