"""Shared helpers for the OpenAI adapter acceptance tests (test_adapter_*.py, test_seed_examples.py).

Everything here is real: a SQLite file in ``tmp_path``, the real ``openai`` SDK,
:class:`clearance.testing.ScriptedOpenAI` on loopback and, for the ``remote`` engine, a
``clearance serve`` process. Fixtures are imported by the test modules
(``from adapter_support import serve, ...``).

``serve(*turns)`` starts a scripted server and, at teardown, checks every exchange against
OpenAI's published OpenAPI description: each request the adapter sent against
``CreateResponse``, each 200 reply against ``Response`` and each error reply against
``ErrorResponse`` (tests/openai_spec.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openai_spec import assert_valid, load_spec
from server_support import shared_launcher

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI, parse_rules
from clearance.testing import ModelTurn, RawTurn, ScriptedOpenAI

__all__ = [
    "RULES",
    "check_wire",
    "db_path",
    "decision_rows",
    "declared",
    "engine",
    "function_call_outputs",
    "guard_for",
    "recording_refund_guard",
    "refund_payment",
    "sdk_request",
    "serve",
    "tool_outputs",
]

#: The policy most tests run under (domain ``shop``, actor ``agent-7``).
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

#: Resilience knobs that keep retries quick in tests (no jitter, millisecond backoff).
FAST = {
    "provider_retry_backoff_seconds": 0.01,
    "provider_retry_max_backoff_seconds": 0.02,
    "provider_retry_jitter_seconds": 0.0,
}


def refund_payment(order_id: str, amount: float) -> dict[str, Any]:
    return {"ok": True, "order_id": order_id, "amount": amount}


def check_wire(server: ScriptedOpenAI) -> None:
    """Every request the adapter sent and every reply the server gave, against the official spec."""
    for rec in server.requests:
        if rec.api == "chat":
            check_chat_exchange(rec)
            continue
        if isinstance(rec.turn, ModelTurn):
            assert_valid("CreateResponse", rec.json)
        for event in getattr(rec, "events", None) or []:
            if event.get("type") != "error" or "message" in event:  # the live API's nested-only shape is off-spec
                assert_valid("ResponseStreamEvent", event, strict_one_of=True)
        if rec.status == 200 and (isinstance(rec.turn, ModelTurn) or rec.method == "GET"):
            assert_valid("Response", rec.response, strict_one_of=True)
        elif rec.status is not None and rec.status >= 400 and not isinstance(rec.turn, RawTurn):
            assert_valid("ErrorResponse", rec.response, strict_one_of=True)


def declared(schema_name: str) -> set[str]:
    """Every property name the spec declares for a request schema (through allOf and $ref).

    The spec lets unknown keys through, so a misnamed setting would validate; this catches it.
    """
    schemas = load_spec()["components"]["schemas"]
    names: set[str] = set()
    seen: set[str] = set()

    def walk(schema: dict) -> None:
        ref = schema.get("$ref", "").rsplit("/", 1)[-1]
        if ref and ref not in seen:
            seen.add(ref)
            walk(schemas[ref])
        names.update(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            walk(part)

    walk(schemas[schema_name])
    return names


def check_chat_exchange(rec: Any) -> None:
    """A Chat Completions exchange: request, completion or chunks, errors (3.0's nullable honoured)."""
    if isinstance(rec.turn, ModelTurn):
        assert_valid("CreateChatCompletionRequest", rec.json, nullable=True)
    if rec.status == 200 and isinstance(rec.turn, ModelTurn):
        assert_valid("CreateChatCompletionResponse", rec.response, strict_one_of=True, nullable=True)
    elif rec.status is not None and rec.status >= 400 and not isinstance(rec.turn, RawTurn):
        assert_valid("ErrorResponse", rec.response, strict_one_of=True)
    for event in rec.events or ():
        if "error" not in event:
            assert_valid("CreateChatCompletionStreamResponse", event, strict_one_of=True, nullable=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedOpenAI]]:
    """``serve(*turns)`` -> a started server; stopped and spec-checked at teardown."""
    servers: list[ScriptedOpenAI] = []

    def make(*turns: Any) -> ScriptedOpenAI:
        server = ScriptedOpenAI(turns).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    for server in servers:
        check_wire(server)
        assert not server.problems, server.problems


#: Which engines the adapter tests run against: ``embedded`` (an Engine in this process) and
#: ``remote`` (a RemoteEngine talking over loopback HTTP to ``clearance serve`` running as a
#: separate process on the test's own database file). Both run by default, in CI too.
ENGINES = [e for e in os.environ.get("CLEARANCE_TEST_ENGINES", "embedded,remote").split(",") if e]


@dataclass
class _Served:
    """A fresh database (RULES applied, an admin key made) and the server process on it."""

    db: Path
    url: str
    token: str
    store_url: str
    handle: Any


class _RemotePool:
    """Fresh servers for the remote variant, each prepared while the test before it runs.

    Every remote test still gets its own database file and its own ``clearance serve`` process;
    only the waiting (migrating, forking, the server starting up) moves off the test's path.
    """

    def __init__(self) -> None:
        import tempfile
        from concurrent.futures import ThreadPoolExecutor

        self.root = Path(tempfile.mkdtemp(prefix="clearance-remote-tests-"))
        self.launcher = shared_launcher()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="remote-pool")
        self._next: Any = None

    def _prepare(self) -> _Served:
        import tempfile
        db = Path(tempfile.mkdtemp(dir=self.root)) / "clearance.db"
        eng = Engine(db)
        try:
            eng.apply_rules(parse_rules(RULES))
            _, token = eng.keys.create("adapter-tests", "admin")
            store_url = eng.store.url
        finally:
            eng.close()  # the server process owns the engine: nothing of it stays open here
        handle, url = self.launcher.start(db)
        return _Served(db, url, token, store_url, handle)

    def take(self) -> _Served:
        current = self._next if self._next is not None else self._executor.submit(self._prepare)
        self._next = self._executor.submit(self._prepare)
        return current.result()  # type: ignore[no-any-return]

    def close(self) -> None:
        import shutil

        if self._next is not None:
            try:
                self.launcher.stop(self._next.result().handle)
            except Exception:  # noqa: BLE001 - the launcher stops whatever is left when it closes
                pass
        self._executor.shutdown(wait=True)
        shutil.rmtree(self.root, ignore_errors=True)


_pool: _RemotePool | None = None
#: db_path -> the server prepared on it, from the db_path fixture to the engine fixture.
_served: dict[Path, _Served] = {}


def _remote_pool() -> _RemotePool:
    global _pool
    if _pool is None:
        import atexit

        _pool = _RemotePool()
        atexit.register(_pool.close)
    return _pool


def _engine_param(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("engine") if callspec is not None else None


@pytest.fixture
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The test's own SQLite file; for the remote variant, the one its server process already runs on."""
    if _engine_param(request) == "remote":
        served = _remote_pool().take()
        _served[served.db] = served
        return served.db
    return tmp_path / "clearance.db"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Any]:
    if request.param == "embedded":
        eng = Engine(db_path)
        eng.apply_rules(parse_rules(RULES))
        yield eng
        eng.close()
        return
    if request.param != "remote":
        raise ValueError(f"CLEARANCE_TEST_ENGINES names an unknown engine {request.param!r} (embedded, remote)")
    from clearance.remote import RemoteEngine

    served = _served.pop(db_path)
    remote = RemoteEngine(served.url, served.token)
    remote.store = SimpleNamespace(url=served.store_url)  # type: ignore[attr-defined]  # for tests that locate the database file
    try:
        yield remote
    finally:
        remote.close()
        _remote_pool().launcher.stop(served.handle)


def sdk_request(method: str = "POST", url: str = "https://api.openai.com/v1/responses") -> Any:
    """A request as the openai SDK's exceptions carry it, built by the SDK's public HTTP client class
    (``openai.DefaultHttpxClient``), so it is of the SDK's own HTTP library on every line
    (``httpx`` on 2.x, ``httpx2`` on 3.x): for building ``openai.APIError`` and its kin in a test."""
    import openai

    with openai.DefaultHttpxClient() as client:
        return client.build_request(method, url)


def guard_for(server: ScriptedOpenAI, engine: Any, cls: type = GuardedOpenAI, **kw: Any) -> Any:
    """A guard on ``server`` with the test actor/domain and quick retries."""
    kw.setdefault("actor", "agent-7")
    kw.setdefault("domain", "shop")
    for key, value in FAST.items():
        kw.setdefault(key, value)
    if "client" not in kw:
        kw.setdefault("base_url", server.base_url)
        kw.setdefault("openai_api_key", "test")
    from clearance.remote import RemoteEngine

    if isinstance(engine, RemoteEngine) and issubclass(cls, AsyncGuardedOpenAI):
        engine = engine.aio()  # the async guard takes the async twin, as it wraps an Engine in AsyncEngine
    return cls(engine=engine, **kw)


def recording_refund_guard(server: ScriptedOpenAI, engine: Any, cls: type = GuardedOpenAI, ran: list | None = None,
                           **kw: Any) -> Any:  # fmt: skip
    """A guard whose ``refund_payment`` tool appends each order id it really refunds to ``ran``."""
    g = guard_for(server, engine, cls, **kw)

    def refund(order_id: str, amount: float) -> dict[str, Any]:
        if ran is not None:
            ran.append(order_id)
        return refund_payment(order_id, amount)

    g.tool("refund_payment", refund, value_from_args=lambda a: a["amount"])
    return g


def function_call_outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in body.get("input") or [] if isinstance(i, dict) and i.get("type") == "function_call_output"]


def tool_outputs(body: dict[str, Any]) -> dict[str, Any]:
    """``call_id -> parsed output`` of the function_call_output items of one request body."""
    out = {}
    for item in function_call_outputs(body):
        try:
            out[item["call_id"]] = json.loads(item["output"])
        except ValueError:
            out[item["call_id"]] = item["output"]
    return out


def decision_rows(db: Path, tool: str | None = None) -> list[dict[str, Any]]:
    """The ``decisions`` table read through a separate sqlite3 connection (what is durable)."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        if tool is None:
            rows = con.execute("SELECT * FROM decisions ORDER BY decided_at").fetchall()
        else:
            rows = con.execute("SELECT * FROM decisions WHERE tool = ? ORDER BY decided_at", (tool,)).fetchall()
        return [dict(r) for r in rows]
    finally:
        con.close()
