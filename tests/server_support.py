"""Helpers for the server tests (test_server_*.py, test_remote_*.py): real servers on loopback.

The ``live`` fixture (conftest.py) runs the app with uvicorn in a thread over a SQLite file in
``tmp_path``, with one key per role (:data:`KEYS`, :func:`make_keys`); :class:`Live` is what it
gives. ``start_process`` runs ``clearance serve`` as a separate process, and
:class:`ServeLauncher` does the same in a fraction of the time (for the adapter tests marked
``server_process``). Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clearance import Engine

#: The policy the server and adapter tests run under (domain ``shop``, actor ``agent-7``).
RULES = """
version: 1
rules:
  - id: refunds
    tool: refund_payment
    max_value: 2000
    require_approval_above: 500
  - id: never-delete
    tool: delete_account
    effect: block
  - id: wires-two-approvers
    tool: wire_transfer
    require_approval_above: 0
    approvals_required: 2
"""

#: name -> (role, identity)
KEYS = {
    "agent": ("agent", "agent-7"),
    "approver": ("approver", "alice"),
    "approver2": ("approver", "bob"),
    "admin": ("admin", "ops"),
    "carol-agent": ("agent", "carol"),
    "carol-approver": ("approver", "carol"),
}


@dataclass
class Live:
    url: str
    db: Path
    tokens: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str | None) -> httpx.Client:
        """A keep-alive client with ``who``'s key (None: no key)."""
        name = who or "-"
        if name not in self.clients:
            headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
            self.clients[name] = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self.clients[name]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def make_keys(engine: Engine) -> dict[str, str]:
    return {name: engine.keys.create(name, role, identity=identity)[1] for name, (role, identity) in KEYS.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_process(db: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``clearance serve`` in its own process; returns it and its URL once it answers."""
    port = free_port()
    env = dict(os.environ, CLEARANCE_DB=str(db), **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "clearance", "serve", "--port", str(port), "--log-level", "warning",
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"clearance serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("clearance serve did not answer within 30 s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: The launcher process: imports everything ``clearance serve`` needs once, then answers one
#: JSON command per stdin line. ``start`` forks a child that runs ``clearance serve`` (the console
#: script's own ``main``, with the argv and ``CLEARANCE_DB`` a shell would give it) and answers
#: its pid; ``alive`` says whether a child still runs; ``stop`` sends it SIGTERM. Being the
#: parent, the launcher reaps its children itself, so a pid is never mistaken for another
#: process's; at end of input it stops whatever still runs.
_LAUNCHER = r"""
import json, os, signal, sys, time
import clearance.cli, clearance.server.app, clearance.server.runner, uvicorn, fastapi  # the slow part, done once

signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the servers; the launcher ends with its input
children = set()


def reap(pid=None):
    for child in list(children) if pid is None else [pid]:
        if os.waitpid(child, os.WNOHANG)[0]:
            children.discard(child)


def serve(job):
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log, 2)
        os.environ["CLEARANCE_DB"] = job["db"]
        sys.argv = ["clearance", "serve", "--port", str(job["port"]), "--log-level", "warning"]
        clearance.cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os._exit(code)


for line in sys.stdin:
    job = json.loads(line)
    reap()
    if job["op"] == "start":
        pid = os.fork()
        if pid == 0:
            serve(job)
        children.add(pid)
        answer = pid
    elif job["op"] == "alive":
        answer = job["pid"] in children
    else:  # stop
        if job["pid"] in children:
            os.kill(job["pid"], signal.SIGTERM)
        answer = None
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()

deadline = time.monotonic() + 10
for pid in children:
    os.kill(pid, signal.SIGTERM)
while children:
    if time.monotonic() > deadline:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.01)
    reap()
"""


class ServeLauncher:
    """Start ``clearance serve`` processes quickly: each one a separate process on its own port
    and database, forked from a launcher that has already paid for the imports (about a second
    each, which over a whole suite of per-test servers would add minutes).

    Where ``fork`` is missing (Windows) it falls back to :func:`start_process`. Stop what
    :meth:`start` returned with :meth:`stop`.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()  # one command at a time: a test and a prefetch may both ask
        if hasattr(os, "fork"):
            self._proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip

    def _ask(self, **command: Any) -> Any:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        with self._lock:
            self._proc.stdin.write(json.dumps(command) + "\n")
            answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the serve launcher exited with {self._proc.wait()}")
        return json.loads(answer)

    def start(self, db: Path) -> tuple[Any, str]:
        """A server on ``db`` (migrated and given its keys beforehand) and its URL, once it answers."""
        if self._proc is None:
            return start_process(db)
        log = db.with_suffix(".serve.log")
        for _ in range(3):  # a port found free may be taken before the child binds it
            port = free_port()
            pid = self._ask(op="start", db=str(db), port=port, log=str(log))
            url = f"http://127.0.0.1:{port}"
            if _wait_healthy(url, lambda: bool(self._ask(op="alive", pid=pid))):
                return pid, url
            self.stop(pid)
        raise RuntimeError(f"clearance serve did not start: {log.read_text() if log.exists() else ''}")

    def stop(self, handle: Any) -> None:
        """Ask the server to shut down (SIGTERM, as a supervisor would). The launcher reaps it
        later, so the next test need not sit through uvicorn's shutdown."""
        if isinstance(handle, int):
            self._ask(op="stop", pid=handle)
        else:
            stop_process(handle)

    def close(self) -> None:
        """Stop every server still running and end the launcher."""
        if self._proc is not None:
            assert self._proc.stdin
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
            self._proc = None


_shared: ServeLauncher | None = None


def shared_launcher() -> ServeLauncher:
    """One launcher for the whole test session (closed when the interpreter exits)."""
    global _shared
    if _shared is None:
        import atexit

        _shared = ServeLauncher()
        atexit.register(_shared.close)
    return _shared


def _wait_healthy(url: str, alive: Any, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.01)
    return False


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m clearance --db DB ARGS`` in a process of its own (forked: cli_support.run_cli)."""
    from cli_support import run_cli

    return run_cli(["--db", str(db), *args], timeout=60)


def create_key_cli(db: Path, name: str, role: str, identity: str | None = None) -> str:
    args = ["keys", "create", name, "--role", role, "--json"] + (["--identity", identity] if identity else [])
    res = cli(db, *args)
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["token"])


def assert_envelope(response: httpx.Response, status: int, type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"type", "message", "status", "field", "correlation_id"} <= set(err), err
    assert err["status"] == status and err["message"]
    assert err["correlation_id"] == response.headers["x-correlation-id"]
    assert "Traceback" not in response.text
    if type is not None:
        assert err["type"] == type, err
    return err  # type: ignore[no-any-return]
