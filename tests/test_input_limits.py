"""Input limits declared once, in the model: identifiers are one bounded line of printable text
and a value at stake is finite and never negative. The embedded engine refuses them before
anything is written; the server answers the same 422 on SQLite and PostgreSQL; a tool's value
hook that goes negative is an error the model hears, not a credit on the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from clearance import Engine, GuardedOpenAI, parse_rules
from clearance.testing import ScriptedOpenAI, turn

BUDGET = """
rules:
  - id: budget
    tool: refund
    budget: 1000
"""

BAD_ACTIONS = [
    ({"tool": "refund", "value": -100000}, "value"),
    ({"tool": "refund", "value": float("nan")}, "value"),
    ({"tool": "x" * 300}, "tool"),
    ({"tool": "refund", "actor": "agent\x00"}, "actor"),
    ({"tool": "refund", "domain": "pay\x1b[32mments"}, "domain"),
    ({"tool": "refund", "target": "t" * 3000}, "target"),
]


@pytest.mark.parametrize(("action", "field"), BAD_ACTIONS, ids=[f for _, f in BAD_ACTIONS])
def test_the_engine_refuses_them_and_writes_nothing(tmp_path: Path, action: dict[str, Any], field: str) -> None:
    with Engine(tmp_path / "l.db") as engine:
        with pytest.raises(ValidationError) as info:
            engine.evaluate(action)
        assert info.value.errors()[0]["loc"] == (field,)
        assert engine.audit_events() == []


def test_a_negative_value_no_longer_credits_a_budget(tmp_path: Path) -> None:
    with Engine(tmp_path / "b.db") as engine:
        engine.apply_rules(parse_rules(BUDGET))
        with pytest.raises(ValidationError):
            engine.evaluate({"tool": "refund", "value": -100000})
        assert engine.evaluate({"tool": "refund", "value": 900}).result.value == "allowed"
        assert engine.evaluate({"tool": "refund", "value": 900}).result.value == "blocked"  # the budget still holds


def _server_answers(engine: Engine) -> list[tuple[int, str | None]]:
    from clearance.server import ServerThread

    _, token = engine.keys.create("bot", "admin")
    answers = []
    with ServerThread(engine) as server, httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as c:
        for action, _ in BAD_ACTIONS:
            body = httpx.Request("POST", "/", json=action).content if action.get("value") == action.get("value") else (
                b'{"tool": "refund", "value": NaN}')  # fmt: skip
            r = c.post("/v1/decisions", content=body, headers={"content-type": "application/json"})
            answers.append((r.status_code, r.json()["error"]["field"]))
    return answers


EXPECTED = [(422, f"body.{f}") for _, f in BAD_ACTIONS]


def test_the_server_answers_422_naming_the_field_on_sqlite(tmp_path: Path) -> None:
    with Engine(tmp_path / "s.db") as engine:
        assert _server_answers(engine) == EXPECTED


def test_the_server_answers_the_same_on_postgresql(pg_url: str) -> None:
    with Engine(pg_url) as engine:
        assert _server_answers(engine) == EXPECTED


def test_a_negative_value_from_a_tool_is_an_error_the_model_hears(tmp_path: Path) -> None:
    ran = []

    def refund(order_id: str, amount: float) -> dict[str, Any]:
        ran.append(order_id)
        return {"ok": True}

    engine = Engine(tmp_path / "g.db")
    with ScriptedOpenAI([turn.function_call("refund", {"order_id": "o1", "amount": -5}), turn.text("ok")]) as server:
        guard = GuardedOpenAI(engine=engine, base_url=server.base_url, openai_api_key="k")
        guard.tool("refund", refund, value_from_args=lambda a: a["amount"])
        result = guard.run(input="refund", model="m")
    [event] = result["execution"]["events"]
    assert event["status"] == "failed" and "never negative" in event["error"] and ran == []
    assert engine.audit_events(type="decision.made") == []  # nothing was decided ...
    assert [e.payload["tool"] for e in engine.audit_events(type="proposal.refused")] == ["refund"]  # ... and it is on record
    engine.close()


def test_a_guard_with_an_unusable_actor_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="actor"):
        GuardedOpenAI(openai_api_key="k", base_url="http://127.0.0.1:9", actor="agent\n2", engine=None)
