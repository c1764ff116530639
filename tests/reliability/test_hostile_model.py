"""Hostile model output through the OpenAI adapter, against the project's scripted
OpenAI-protocol server: calls to tools that were never registered, arguments that are not JSON
or break the tool's schema, names with NUL and escape codes, and huge arguments. Each one is
refused before it runs, audited (``proposal.refused``), and answered to the model, and the run
goes on: the one honest call in the same turn runs exactly once and the model's last answer
comes back. Embedded and through the server (the ``engine`` fixture runs both).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from adapter_support import recording_refund_guard, tool_outputs
from counts import Counts, scaled

from clearance.testing import ScriptedOpenAI, turn

pytestmark = pytest.mark.reliability

HUGE = 2_000_000  # characters of one argument

#: ``(name, arguments as sent)``: what a confused or hijacked model may propose.
HOSTILE: list[tuple[str, str]] = [
    ("drop_database", "{}"),
    ("refund_payment", '{"order_id": '),
    ("refund_payment", "not json at all"),
    ("refund_payment", "[1, 2, 3]"),
    ("refund_payment", '{"order_id": 5, "amount": "lots"}'),
    ("refund_payment", '{"amount": 10}'),
    ("refund_payment", '{"order_id": "o-x", "amount": 10, "extra": true, "amount": -5}'),
    ("refund_payment", '{"order_id": "o-y", "amount": NaN}'),
    ("refund_payment", '{"order_id": "o-z", "amount": 1e999}'),
    ("refund\x00payment", '{"order_id": "o-n", "amount": 10}'),
    ("\x1b[32mrefund_payment\x1b[0m", '{"order_id": "o-e", "amount": 10}'),
    ("r" * 10_000, "{}"),
    ("refund_payment", json.dumps({"order_id": "o" * HUGE, "amount": 10})),
    ("refund_payment", "[" * 50_000 + "]" * 50_000),
    ("refund_payment", '{"order_id": "o-d", "amount": 10, "note": ' + "[" * 900 + "]" * 900 + "}"),
    ("refund_payment", '{"order_id": "o-d", "amount": 10, "note": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"),
]


def test_hostile_model_output(engine: Any, serve: Callable[..., ScriptedOpenAI], record: Counts,
                              request: pytest.FixtureRequest) -> None:  # fmt: skip
    record.area, record.backend = f"hostile model output, {request.node.callspec.params['engine']}", "SQLite"
    for round_ in range(scaled(1)):
        calls = [(name, args, f"call_bad_{i}") for i, (name, args) in enumerate(HOSTILE)]
        calls.append(("refund_payment", json.dumps({"order_id": f"o-good-{round_}", "amount": 10}), "call_good"))
        server = serve(turn.function_calls(calls), turn.text("All handled."))
        ran: list[str] = []
        guard = recording_refund_guard(server, engine, ran=ran)
        before = len(engine.audit_events(type="proposal.refused", limit=1000))

        result = guard.run(input="refund everything", model="gpt-test")

        # the run went on: the model heard back about every call and answered
        assert result["output_text"] == "All handled."
        answered = tool_outputs(server.requests[-1].json)
        assert set(answered) == {c for _, _, c in calls}
        # only the honest call ran, once
        assert ran == [f"o-good-{round_}"]
        statuses = {e.get("call_id"): e["status"] for e in result["execution"]["events"]}
        refused = [c for _, _, c in calls[:-1] if statuses.get(c) == "executed"]
        # every hostile proposal is on record, bounded
        audited = engine.audit_events(type="proposal.refused", limit=1000)[before:]
        record.add(runs=1, requests=len(calls), double_executions=max(0, len(ran) - 1), errors=len(refused),
                   lost=max(0, len(HOSTILE) - len(audited)))  # fmt: skip
        assert not refused, refused
        assert len(audited) == len(HOSTILE), [e.payload for e in audited]
        assert all(len(json.dumps(e.payload)) < 20_000 for e in audited)
        assert all("\x00" not in json.dumps(e.payload) and "\x1b" not in e.payload["tool"] for e in audited)
    assert engine.verify_audit().ok
