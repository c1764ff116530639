"""Helpers for the server tests (test_server_*.py, test_remote_*.py): real servers on loopback.

``live`` runs the app with uvicorn in a thread over a SQLite file in ``tmp_path``;
``start_process`` runs ``clearance serve`` as a separate process. Both come with one key per
role; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance import Engine, parse_rules
from clearance.server import ServerThread

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
    from clearance.server.keystore import KeyStore

    store = KeyStore(engine.store)
    return {name: store.create(name, role, identity=identity)[1] for name, (role, identity) in KEYS.items()}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    db = tmp_path / "server.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    tokens = make_keys(engine)
    server = ServerThread(engine).start()
    result = Live(server.url, db, tokens)
    yield result
    result.close()
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_process(db: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``clearance serve`` in its own process; returns it and its URL once it answers."""
    port = free_port()
    env = dict(os.environ, CLEARANCE_DB=str(db))
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


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clearance", "--db", str(db), *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


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
