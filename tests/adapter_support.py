"""Helpers for the OpenAI adapter acceptance tests (test_adapter_*.py, test_seed_examples.py).

Their fixtures (``serve``, ``db_path``, ``engine``) are in conftest.py. Everything is real: a
SQLite file in ``tmp_path``, the real ``openai`` SDK and :class:`clearance.testing.ScriptedOpenAI`
on loopback.

:func:`check_wire` is what ``serve`` checks at teardown: every exchange against OpenAI's
published OpenAPI description: each request the adapter sent against ``CreateResponse``, each
200 reply against ``Response`` and each error reply against ``ErrorResponse``
(tests/openai_spec.py).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from openai_spec import assert_valid, load_spec
from server_support import RULES  # the policy most tests run under (domain ``shop``, actor ``agent-7``)

from clearance import AsyncGuardedOpenAI, GuardedOpenAI
from clearance.testing import ModelTurn, RawTurn, ScriptedOpenAI

__all__ = [
    "FAST",
    "RULES",
    "check_wire",
    "decision_rows",
    "declared",
    "function_call_outputs",
    "guard_for",
    "recording_refund_guard",
    "refund_payment",
    "tool_outputs",
]


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
