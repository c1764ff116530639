"""The test harness's own shortcuts answer as what they stand in for.

- ``cli_support.run_cli`` (a process forked from a launcher) against ``python -m clearance`` in a
  fresh interpreter: the same exit codes, stdout and stderr, environment and working directory.
- ``app_support.InProcessApp`` (the app in this process, for the adapter suite's remote variant):
  its lifespan runs, both engine clients reach the same app and SQLite file, and a request that
  outlasts its read timeout fails as on a socket.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import InProcessApp, InProcessRemoteEngine
from cli_support import run_cli
from server_support import RULES

from clearance import Engine, parse_rules


def fresh(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clearance", *args], capture_output=True, text=True, timeout=60,
                          **kw)  # type: ignore[call-overload]  # fmt: skip


@pytest.mark.parametrize("args", [
    ["check", "--tool", "send_email", "--json"],                # 0, JSON on stdout
    ["check", "--tool", "x", "--value", "lots"],                # 2, a usage error on stderr
    ["approvals", "approve", "apr_missing", "--by", "alice"],   # 1, one clear line on stderr
    ["rules", "show", "--json"],
])  # fmt: skip
def test_run_cli_answers_as_a_fresh_interpreter_does(tmp_path: Path, args: list[str]) -> None:
    env = dict({k: v for k, v in os.environ.items() if k != "CLEARANCE_DB"}, COLUMNS="123")
    forked = run_cli(["--db", str(tmp_path / "a.db"), *args], env=env)
    expected = fresh(["--db", str(tmp_path / "b.db"), *args], env=env)
    clean = [(r.returncode, r.stdout.replace("a.db", "X").replace("b.db", "X"), r.stderr.replace("a.db", "X")
              .replace("b.db", "X")) for r in (forked, expected)]  # fmt: skip
    if "--json" in args and args[0] == "check":  # ids and times differ from run to run; the shape does not
        assert forked.returncode == expected.returncode == 0 and forked.stdout.startswith("{")
    else:
        assert clean[0] == clean[1]


def test_run_cli_gives_each_process_its_environment_cwd_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "action.json").write_text('{"tool": "send_email", "value": 3}')
    env = dict(os.environ, CLEARANCE_DB=str(tmp_path / "env.db"))
    res = run_cli(["check", "--file", "-", "--json"], env=env, cwd=tmp_path, input=(tmp_path / "action.json").read_text())
    assert res.returncode == 0, res.stderr
    assert '"tool": "send_email"' in res.stdout or '"tool":"send_email"' in res.stdout
    assert (tmp_path / "env.db").exists()  # CLEARANCE_DB from this call's environment
    assert run_cli(["check", "--tool", "t"], env=dict(env, CLEARANCE_DB="rel.db"), cwd=tmp_path).returncode == 0
    assert (tmp_path / "rel.db").exists()  # a relative path is the call's cwd's
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli(["step", "stream", "--config", str(tmp_path / "none.yaml")], env=env, input=None, timeout=0.0)


def test_in_process_app_runs_its_lifespan_and_serves_both_clients(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    _, token = engine.keys.create("t", "admin")
    with InProcessApp(engine) as app:
        assert app.app.state.loop is app._loop  # the lifespan ran, on the app's own loop
        remote = InProcessRemoteEngine(app, token)
        decision = remote.evaluate({"tool": "refund_payment", "value": 900, "actor": "agent-7", "domain": "shop"})
        assert decision.requires_approval

        async def wait() -> tuple[Any, float]:
            aremote = remote.aio()
            try:
                started = time.monotonic()
                waiting = asyncio.ensure_future(aremote.wait_approval(decision.approval_id, timeout_seconds=30))
                await asyncio.sleep(0.3)  # the long-poll waits in the app (resolved earlier, it answers at once anyway)
                await asyncio.to_thread(remote.resolve_approval, decision.approval_id, "approved", approver="alice")
                return await waiting, time.monotonic() - started
            finally:
                await aremote.aclose()

        approval, took = asyncio.run(wait())
        assert approval.status.value == "approved" and took < 15  # woken by the resolution, not by its timeout
        pending = remote.evaluate({"tool": "wire_transfer", "value": 5, "actor": "agent-7", "domain": "shop"})
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(transport=app.transport(), base_url=app.url, headers=headers, timeout=0.2) as client:
            assert client.get(f"/v1/approvals/{pending.approval_id}").status_code == 200
            with pytest.raises(httpx.ReadTimeout):  # the long-poll outlasts the client's read timeout
                client.get(f"/v1/approvals/{pending.approval_id}/wait", params={"timeout_seconds": 2})
        remote.close()
    engine.close()
    with sqlite3.connect(db) as con:  # what the app decided is in the file
        assert con.execute("SELECT count(*) FROM decisions").fetchone()[0] == 2
