"""How the gateway writes its records: a call's decision is committed before the call is
forwarded; its execution is committed after the answer, with the next decision or on its own
a moment later, and whatever is queued when the gateway stops. In process, on a real SQLite
file, with a real upstream MCP server (tests/mcp_upstream.py over stdio)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP gateway needs its extra: pip install 'clearance[mcp]'")

from clearance.adapters.mcp import open_gateway, parse_config  # noqa: E402
from clearance.engine import Engine  # noqa: E402

UPSTREAM = str(Path(__file__).with_name("mcp_upstream.py"))


def _config(tmp_path: Path) -> object:
    return parse_config({"upstreams": {"shop": {"command": sys.executable, "args": [UPSTREAM, str(tmp_path / "ran.jsonl")]}},
                         "actor": "agent-1"})  # fmt: skip


def _execution(db: Path, request_id: str) -> str | None:
    """The execution as another connection to the file reads it (so: committed)."""
    with Engine(db) as other:
        execution = other.get_execution(request_id)
    return execution.status.value if execution is not None else None


def test_an_execution_is_committed_with_the_next_decision_and_the_last_when_the_gateway_stops(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ids: list[str] = []

    async def main() -> None:
        with Engine(db) as engine, anyio.fail_after(120):  # stopping must not wait out the delay
            async with open_gateway(engine, _config(tmp_path)) as gw:
                gw.record_delay = 3600.0  # never on its own here: only a decision's commit takes it along
                first = await gw.call_tool("shop__echo", {"text": "one"})
                ids.append(first.meta["clearance"]["request_id"])
                assert _execution(db, ids[0]) is None  # not yet: it waits for a commit to ride on
                second = await gw.call_tool("shop__fail", {})
                ids.append(second.meta["clearance"]["request_id"])
                assert _execution(db, ids[0]) == "executed"  # committed with the second call's decision
                assert _execution(db, ids[1]) is None
        # stopping the gateway commits what is still queued

    anyio.run(main)
    assert _execution(db, ids[1]) == "failed"
    assert [json.loads(line)["tool"] for line in (tmp_path / "ran.jsonl").read_text().splitlines()] == ["echo", "fail"]


def test_an_execution_is_committed_on_its_own_when_no_call_follows(tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def main() -> None:
        with Engine(db) as engine:
            async with open_gateway(engine, _config(tmp_path)) as gw:
                result = await gw.call_tool("shop__echo", {"text": "alone"})
                request_id = result.meta["clearance"]["request_id"]
                deadline = time.monotonic() + 20
                while _execution(db, request_id) is None and time.monotonic() < deadline:
                    await anyio.sleep(0.02)
                assert _execution(db, request_id) == "executed"  # while the gateway still runs

    anyio.run(main)


STDIO_CHILD = textwrap.dedent('''
    import asyncio, os, sys
    from clearance.adapters.mcp.stdio import event_loop_stdio

    async def main():
        async with event_loop_stdio() as streams:
            assert streams is not None, "pipes on 0 and 1 are served on the event loop"
            lines, out = streams
            print("stray print")  # fd 1 is diverted while serving: to stderr, not the wire
            os.write(1, b"stray write\\n")
            async for line in lines:
                await out.write(f"{len(line)}:{line[:5]}\\n")
                await out.flush()
        print("after")  # fd 1 is the wire again

    asyncio.run(main())
''')


def test_stdio_on_the_event_loop_keeps_stray_output_off_the_wire_and_reads_long_lines() -> None:
    big = "x" * 300_000  # beyond asyncio's default line limit (64 KiB)
    done = subprocess.run([sys.executable, "-c", STDIO_CHILD], input=f"hello\n{big}\n", capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["6:hello", "300001:xxxxx", "after"]
    assert "stray print" in done.stderr and "stray write" in done.stderr
