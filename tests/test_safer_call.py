"""Safer calls: a rule's constrained allow (clamp, override) patches the call, the patched call is
judged by every rule, and the adapter runs it and tells the model (Responses and Chat)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from adapter_support import guard_for

from clearance import Engine, GuardedOpenAI
from clearance.errors import ArgumentsMismatch, RuleError
from clearance.policy import parse_rules
from clearance.testing import turn

SAFER = """
version: 1
rules:
  - id: cap-refunds
    tool: refund_payment
    clamp: {amount: {max: 500}}
  - id: eur-only
    tool: refund_payment
    when: "args.order_id.startsWith('ord_')"
    override: {currency: EUR}
  - id: vip-orders
    tool: refund_payment
    when: "args.order_id == 'ord_vip' && args.amount > 400"
    effect: block
"""


@pytest.fixture
def safer(tmp_path: Path) -> Engine:
    engine = Engine(tmp_path / "safer.db")
    engine.apply_rules(parse_rules(SAFER))
    yield engine
    engine.close()


def test_the_engine_patches_rechecks_and_binds_the_patched_call(safer: Engine) -> None:
    d = safer.evaluate({"tool": "refund_payment", "arguments": {"order_id": "ord_1", "amount": 900}, "value": 900})
    assert d.result.value == "allowed"
    assert [(p.rule_id, p.argument, p.original, p.value) for p in d.patches] == [
        ("cap-refunds", "amount", 900, 500), ("eur-only", "currency", None, "EUR")]
    assert d.reason.startswith("with arguments changed (amount 900 -> 500 by rule cap-refunds, currency None -> 'EUR'")
    patched = d.patched({"order_id": "ord_1", "amount": 900})
    assert patched == {"order_id": "ord_1", "amount": 500, "currency": "EUR"}
    assert safer.get_action(d.request_id).value == 500.0  # the value follows the clamped amount
    with pytest.raises(ArgumentsMismatch):
        safer.claim_execution(d.request_id, claimant="w", arguments={"order_id": "ord_1", "amount": 900})
    assert safer.claim_execution(d.request_id, claimant="w", arguments=patched).status.value == "unknown"
    # The patched call breaks another rule: blocked, and the reason says so.
    vip = safer.evaluate({"tool": "refund_payment", "arguments": {"order_id": "ord_vip", "amount": 900}})
    assert vip.result.value == "blocked" and "vip-orders" in vip.reason and "amount 900 -> 500" in vip.reason
    # Within bounds: nothing patched but the override.
    small = safer.evaluate({"tool": "refund_payment", "arguments": {"order_id": "x", "amount": 20}})
    assert small.patches == [] and small.result.value == "allowed"


def test_a_patching_rule_with_limits_is_refused_at_load() -> None:
    with pytest.raises(RuleError, match="clamp or override patches calls"):
        parse_rules("rules: [{id: x, clamp: {amount: {max: 5}}, max_value: 10}]")
    with pytest.raises(RuleError, match="min 9 is above max 5"):
        parse_rules("rules: [{id: x, clamp: {amount: {min: 9, max: 5}}}]")


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_the_adapter_runs_the_patched_call_and_tells_the_model(serve: Any, safer: Engine, api: str) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 900, "currency": "USD"}),
                   turn.function_call("refund_payment", {"order_id": "ord_vip", "amount": 900, "currency": "USD"}),
                   turn.text("Done."))  # fmt: skip
    amounts: list[float] = []
    g = guard_for(server, safer, GuardedOpenAI, **({"api": "chat"} if api == "chat" else {}))

    def refund(order_id: str, amount: float, currency: str = "USD") -> dict[str, Any]:
        amounts.append(amount)
        return {"ok": True, "order_id": order_id, "amount": amount, "currency": currency}

    g.tool("refund_payment", refund, value_from_args=lambda a: a["amount"])
    result = g.run(input="Refund ord_1 and ord_vip for 900 each", model="gpt-4.1")
    assert amounts == [500]  # the patched call ran; the vip refund, blocked once patched, did not run at all
    first, second = [e for e in result["execution"]["events"] if e["tool"] == "refund_payment"]
    assert first["status"] == "executed" and first["arguments"]["amount"] == 500 and first["patches"][0]["value"] == 500
    assert second["status"] == "blocked" and "vip-orders" in second["decision"]["reason"]
    told = _tool_output(server.requests[1].json, api)
    assert told["status"] == "executed_with_changes" and told["output"]["amount"] == 500
    assert told["output"]["currency"] == "EUR"  # the override reached the tool
    assert told["changed_arguments"] == [{"argument": "amount", "from": 900, "to": 500, "rule_id": "cap-refunds"},
                                         {"argument": "currency", "from": "USD", "to": "EUR", "rule_id": "eur-only"}]
    assert 'amount 900 -> 500 (rule cap-refunds); currency "USD" -> "EUR" (rule eur-only)' in told["message"]
    refused = _tool_output(server.requests[2].json, api)
    assert refused["status"] == "blocked" and "vip-orders" in refused["reason"]


def _tool_output(body: dict[str, Any], api: str) -> dict[str, Any]:
    if api == "chat":
        return json.loads(next(m for m in reversed(body["messages"]) if m["role"] == "tool")["content"])
    return json.loads(next(i for i in reversed(body["input"]) if i.get("type") == "function_call_output")["output"])
