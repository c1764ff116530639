"""The MCP gateway end to end: a real upstream MCP server (tests/mcp_upstream.py, written with
the ``mcp`` SDK) behind ``clearance mcp proxy`` run as a separate process, driven with the
SDK's own client, over stdio and over Streamable HTTP. The upstream writes down every call that
reaches it, so "never reached the upstream" and "ran exactly once" are read from its log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP gateway needs its extra: pip install 'clearance[mcp]'")

from mcp import Client, StdioServerParameters  # noqa: E402

from clearance.engine import Engine  # noqa: E402
from cli_support import run_cli  # noqa: E402

UPSTREAM = str(Path(__file__).with_name("mcp_upstream.py"))

RULES = """
rules:
  - id: no-deletes
    tool: "*delete_repo"
    deny_actors: [agent-*]
  - id: refunds
    tool: "*refund"
    max_value: 1000
    require_approval_above: 100
"""


@dataclass
class Setup:
    tmp: Path
    db: Path
    log: Path
    prefix: str  # "" on stdio; the upstream's name and "__" with a --config
    source: str  # what the upstream's tools are pinned under

    def ran(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(["--db", str(self.db), *args])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def _pending(db: Path, timeout: float = 20) -> str:
    """The id of the one pending approval, once the gateway has asked for it."""
    with Engine(db) as engine:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = engine.list_approvals("pending")
            if pending:
                return pending[0].approval_id
            time.sleep(0.05)
    raise AssertionError("no approval was requested")


def _recorded(engine: Engine, request_id: str, timeout: float = 10) -> str | None:
    deadline = time.monotonic() + timeout
    while (execution := engine.get_execution(request_id)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return execution.status.value if execution is not None else None


async def _scenario(client: Client, s: Setup) -> None:
    p = s.prefix
    await anyio.to_thread.run_sync(run_cli, ["--version"])  # the CLI's launcher is up before a call waits on it
    # tools/list: the upstream's tools, less the one the rules deny this actor outright
    names = {t.name for t in (await client.list_tools()).tools}
    assert {f"{p}echo", f"{p}refund", f"{p}fail"} <= names and f"{p}delete_repo" not in names

    # allowed: forwarded, the upstream's own result returned, its execution recorded
    result = await client.call_tool(f"{p}echo", {"text": "hello"})
    assert not result.is_error and result.content[0].text == "hello"
    request_id = result.meta["clearance"]["request_id"]

    # blocked (hidden, and by a limit on a listed tool): an error result with the verdict; the upstream never sees it
    for tool, args in ((f"{p}delete_repo", {"name": "prod"}), (f"{p}refund", {"order_id": "o9", "amount": 5000})):
        refused = await client.call_tool(tool, args)
        assert refused.is_error
        assert refused.structured_content["verdict"] == "blocked" and refused.structured_content["request_id"].startswith("req_")
        assert refused.structured_content["reason"]
    assert [r["tool"] for r in s.ran()] == ["echo"]

    # requires approval: the call waits, with progress, until a person approves it from another process; it runs once
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    approver = threading.Thread(target=lambda: s.cli("approvals", "approve", _pending(s.db), "--by", "alice"))
    approver.start()
    approved = await client.call_tool(f"{p}refund", {"order_id": "o1", "amount": 500}, progress_callback=on_progress)
    await anyio.to_thread.run_sync(approver.join)
    assert not approved.is_error, approved
    assert approved.content[0].text == 'refund done: {"amount": 500, "order_id": "o1"}'
    assert progress and "waiting for approval apr_" in progress[0]
    assert [r["tool"] for r in s.ran()] == ["echo", "refund"]

    # rejected while it waits: an error result naming the approval; nothing runs
    rejecter = threading.Thread(target=lambda: s.cli("approvals", "reject", _pending(s.db), "--by", "bob"))
    rejecter.start()
    rejected = await client.call_tool(f"{p}refund", {"order_id": "o3", "amount": 300})
    await anyio.to_thread.run_sync(rejecter.join)
    assert rejected.is_error and rejected.structured_content["approval_status"] == "rejected"
    assert rejected.structured_content["approval_id"].startswith("apr_") and "by bob" in rejected.structured_content["reason"]
    assert [r["tool"] for r in s.ran()] == ["echo", "refund"]

    # the wait ends (4 s here) before anyone answers: an error with the approval id; approved later, a retry runs it once
    late = await client.call_tool(f"{p}refund", {"order_id": "o2", "amount": 200})
    assert late.is_error and late.structured_content["approval_status"] == "pending"
    approval_id = late.structured_content["approval_id"]
    assert s.cli("approvals", "approve", approval_id, "--by", "alice").returncode == 0
    retried = await client.call_tool(f"{p}refund", {"order_id": "o2", "amount": 200})
    assert not retried.is_error and retried.meta["clearance"]["request_id"] == late.structured_content["request_id"]
    assert [r["arguments"].get("order_id") for r in s.ran() if r["tool"] == "refund"] == ["o1", "o2"]

    # an upstream's error result is recorded as a failed execution
    failed = await client.call_tool(f"{p}fail", {})
    assert failed.is_error and failed.content[0].text == "it broke"

    # executions are recorded (just after the result is sent), an error result as failed; a kill switch hides a tool
    with Engine(s.db) as engine:
        assert _recorded(engine, request_id) == "executed"
        assert _recorded(engine, failed.meta["clearance"]["request_id"]) == "failed"
        assert _recorded(engine, rejected.structured_content["request_id"]) == "rejected"
        engine.activate_kill_switch(tool=f"{p}fail", reason="test")
    assert f"{p}fail" not in {t.name for t in (await client.list_tools()).tools}

    # a changed definition: reported in the audit chain, hidden and refused until a person accepts it
    Path(f"{s.log}.v2").touch()
    assert f"{p}echo" not in {t.name for t in (await client.list_tools()).tools}
    held = await client.call_tool(f"{p}echo", {"text": "poisoned?"})
    assert held.is_error and "changed" in held.structured_content["reason"]
    with Engine(s.db) as engine:
        [changed] = engine.audit_events(type="tool.changed")
        assert changed.payload["source"] == s.source and changed.payload["tool"] == "echo"
        assert engine.verify_audit().ok
    accepted = s.cli("mcp", "accept", "echo", "--source", s.source, "--by", "alice")
    assert accepted.returncode == 0, accepted.stderr
    assert f"{p}echo" in {t.name for t in (await client.list_tools()).tools}
    assert not (await client.call_tool(f"{p}echo", {"text": "again"})).is_error
    assert [r["tool"] for r in s.ran()] == ["echo", "refund", "refund", "fail", "echo"]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    db = tmp_path / "c.db"
    (tmp_path / "rules.yaml").write_text(RULES)
    return Setup(tmp_path, db, tmp_path / "ran.jsonl", "", "test-upstream")


def test_gateway_over_stdio(setup: Setup) -> None:
    s = setup
    params = StdioServerParameters(command=sys.executable, env=_env(), args=[
        "-m", "clearance", "--db", str(s.db), "mcp", "proxy", "--rules", str(s.tmp / "rules.yaml"), "--actor", "agent-1",
        "--value", "refund=amount", "--target", "refund=order_id", "--approval-wait", "4", "--block-changed-tools",
        "--", sys.executable, UPSTREAM, str(s.log)])  # fmt: skip

    async def main() -> None:
        async with Client(params) as client:
            await _scenario(client, s)
            big = "x" * 300_000  # one line of JSON-RPC far beyond asyncio's default line limit, both ways
            assert (await client.call_tool("echo", {"text": big})).content[0].text == big

    anyio.run(main)


@pytest.fixture
def http_upstream(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    port, log = _free_port(), tmp_path / "shop.jsonl"
    proc = subprocess.Popen([sys.executable, UPSTREAM, str(log), "--http", str(port)], env=_env(), stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}/mcp", log, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_gateway_over_streamable_http_with_named_upstreams(tmp_path: Path,
                                                           http_upstream: tuple[str, Path, subprocess.Popen[bytes]]) -> None:  # fmt: skip
    url, log, shop = http_upstream
    s = Setup(tmp_path, tmp_path / "c.db", log, "shop__", "shop")
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "gateway.yaml").write_text(json.dumps({
        "actor": "agent-2", "approval_wait_seconds": 4, "block_changed_tools": True,
        "upstreams": {"shop": {"url": url}, "local": {"command": sys.executable, "args": [UPSTREAM, str(tmp_path / "local.jsonl")]}},
        "tools": {"shop__refund": {"value": "amount", "target": "order_id"}},
    }))  # fmt: skip
    port = _free_port()
    gateway = subprocess.Popen([sys.executable, "-m", "clearance", "--db", str(s.db), "mcp", "proxy", "--rules",
                                str(tmp_path / "rules.yaml"), "--config", str(tmp_path / "gateway.yaml"),
                                "--listen", f"127.0.0.1:{port}"], env=_env(), stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_listening(port, gateway)

        async def main() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                await _scenario(client, s)
                # the second upstream's tools, under its own name
                assert "local__echo" in {t.name for t in (await client.list_tools()).tools}
                assert (await client.call_tool("local__echo", {"text": "x"})).content[0].text == "x"
                # one upstream gone: the other's tools are still served
                shop.terminate()
                shop.wait(10)
                names = {t.name for t in (await client.list_tools()).tools}
                assert "local__echo" in names and not any(n.startswith("shop__") for n in names)

        anyio.run(main)
    finally:
        gateway.terminate()
        gateway.wait(10)
    assert [json.loads(line)["tool"] for line in (tmp_path / "local.jsonl").read_text().splitlines()] == ["echo"]
