"""What the dashboard's tests share: a store with keys, rules and calls waiting for approval,
and signing in through the form (with the ASGI client, or in a browser)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clearance import Engine, parse_rules

RULES = """
version: 1
rules:
  - id: refunds-approval
    domain: payments
    tool: refund_payment
    require_approval_above: 500
  - id: refunds-cap
    domain: payments
    tool: refund_payment
    max_value: 5000
  - id: wire-quorum
    domain: payments
    tool: wire_transfer
    require_approval_above: 0
    approvals_required: 2
  - id: deploys-shadow
    domain: ops
    tool: deploy
    when: "args.env == 'prod'"
    status: shadow
"""

#: The keys made by :func:`seed`: role and identity.
PEOPLE = {"ops": ("admin", "ops"), "alice": ("approver", "alice"), "bob": ("approver", "bob"),
          "agent": ("agent", "agent-7"), "carol": ("approver", "agent-9")}  # fmt: skip


def seed(db: Path) -> dict[str, Any]:
    """A store with rules, one key per person, and decisions of every kind (four waiting)."""
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
        tokens = {name: eng.keys.create(name, role, identity=ident)[1] for name, (role, ident) in PEOPLE.items()}
        refund = {"tool": "refund_payment", "domain": "payments", "actor": "agent-7"}
        for i, (status, cost) in enumerate((("succeeded", 0), ("harmful", 250), ("succeeded", 0), ("reverted", 120))):
            past = eng.evaluate({**refund, "arguments": {"order_id": f"ord_past{i}", "currency": "EUR"}, "value": 200 + 50 * i})
            eng.record_execution(past.request_id, "executed", {"refund_id": f"rf_past{i}"})
            eng.report_outcome(past.request_id, status, cost=cost, severity=0.7 if cost else 0.0, event_id=f"past-{i}")
        waiting = [eng.evaluate({**refund, "arguments": {"order_id": f"ord_{i}", "currency": "EUR"}, "value": 600 + i})
                   for i in range(3)]  # fmt: skip
        wire = eng.evaluate({"tool": "wire_transfer", "domain": "payments", "actor": "agent-9", "value": 90,
                             "arguments": {"iban": "DE00 0000", "reference": "inv-77"}})  # fmt: skip
        allowed = eng.evaluate({**refund, "arguments": {"order_id": "ord_small"}, "value": 20})
        blocked = eng.evaluate({**refund, "arguments": {"order_id": "ord_huge"}, "value": 9000})
        eng.evaluate({"tool": "deploy", "domain": "ops", "actor": "agent-7", "arguments": {"env": "prod"}})
        eng.record_execution(allowed.request_id, "executed", {"refund_id": "rf_1"})
        eng.report_outcome(allowed.request_id, "succeeded", reported_by="agent-7", event_id="o-1")
    return {"tokens": tokens, "waiting": [d.approval_id for d in waiting], "wire": wire.approval_id,
            "allowed": allowed.request_id, "blocked": blocked.request_id}  # fmt: skip


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: Any, token: str) -> Any:
    """Sign ``client`` (an httpx client) in through the login form; returns the answer."""
    return client.post("/login", data={"key": token, "csrf": csrf_of(client.get("/login").text)})
