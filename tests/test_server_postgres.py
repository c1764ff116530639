"""The server on PostgreSQL (a fresh database for this module): keys, decisions, approvals,
idempotent retries and audited refusals, through RemoteEngine. Skipped without a server at
127.0.0.1:5432, except under CI (the ``pg_url`` fixture, conftest.py)."""

from __future__ import annotations

import httpx
import pytest
from server_support import RULES

from clearance import Engine, parse_rules
from clearance.errors import DuplicateVote
from clearance.remote import RemoteEngine


def test_the_server_on_postgresql(pg_url: str) -> None:
    from clearance.server import ServerThread

    engine = Engine(pg_url)
    engine.apply_rules(parse_rules(RULES))
    keys = engine.keys
    tokens = {name: keys.create(name, role, identity=name)[1]
              for name, role in (("agent-7", "agent"), ("alice", "approver"), ("bob", "approver"))}  # fmt: skip
    with ServerThread(engine) as server, RemoteEngine(server.url, tokens["agent-7"]) as agent, \
            RemoteEngine(server.url, tokens["alice"]) as alice, RemoteEngine(server.url, tokens["bob"]) as bob:  # fmt: skip
        wire = agent.evaluate({"tool": "wire_transfer", "value": 10})
        assert alice.resolve_approval(wire.approval_id, "approved", approver="alice").status.value == "pending"
        with pytest.raises(DuplicateVote):
            alice.resolve_approval(wire.approval_id, "approved", approver="alice")
        assert bob.resolve_approval(wire.approval_id, "approved", approver="bob").status.value == "approved"
        assert agent.claim_execution(wire.request_id, claimant="w").claimed_by == "w"
        headers = {"Authorization": f"Bearer {tokens['agent-7']}", "Idempotency-Key": "pg-1"}
        first = httpx.post(f"{server.url}/v1/decisions", json={"tool": "refund_payment", "value": 1}, headers=headers)
        again = httpx.post(f"{server.url}/v1/decisions", json={"tool": "refund_payment", "value": 1}, headers=headers)
        assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
        refused = httpx.get(f"{server.url}/v1/audit/verify", headers={"Authorization": f"Bearer {tokens['agent-7']}"})
        assert refused.status_code == 403
    assert len(engine.audit_events(type="auth.refused")) == 1
    assert len(engine.audit_events(type="decision.made")) == 2
    assert engine.verify_audit().ok
    engine.close()
