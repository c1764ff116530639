"""Suspended runs belong to the agent key that saved them (issue 17, defect 7): another agent key
can neither overwrite nor release one, nor link another actor's approval to a run of its own;
the owner, admins and an embedded engine are not hindered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clearance import Engine, parse_rules
from clearance.errors import NotYours
from clearance.remote import RemoteEngine
from clearance.server import ServerThread

RULES = "rules:\n  - id: ask\n    tool: refund\n    effect: require_approval\n"


def state(trace: str, note: str) -> dict[str, Any]:
    return {"trace_id": trace, "note": note}


@pytest.fixture
def served(tmp_path: Path) -> Any:
    engine = Engine(tmp_path / "runs.db")
    engine.apply_rules(parse_rules(RULES))
    tokens = {who: engine.keys.create(who, role, identity=who)[1] for who, role in
              (("alice-bot", "agent"), ("mallory-bot", "agent"), ("ops", "admin"))}  # fmt: skip
    with ServerThread(engine) as server:
        clients = {who: RemoteEngine(server.url, token) for who, token in tokens.items()}
        yield engine, clients
        for c in clients.values():
            c.close()
    engine.close()


def test_another_agent_can_neither_overwrite_nor_release_nor_borrow_an_approval(served: Any) -> None:
    engine, c = served
    alice, mallory = c["alice-bot"], c["mallory-bot"]
    decision = alice.evaluate({"tool": "refund", "value": 10})
    alice.save_run("run_a", state("trc_a", "alice's"), [decision.approval_id])
    with pytest.raises(NotYours):
        mallory.save_run("run_a", state("trc_a", "mallory's"), [decision.approval_id])
    with pytest.raises(NotYours):
        mallory.release_run("run_a")
    with pytest.raises(NotYours):  # alice's approval linked to a run of mallory's own
        mallory.save_run("run_m", state("trc_m", "mallory's"), [decision.approval_id])
    # The owner's run is untouched, and the owner may save and release it again.
    alice.release_run("run_a")
    alice.save_run("run_a", state("trc_a", "alice's, later"), [decision.approval_id])
    c["ops"].resolve_approval(decision.approval_id, "approved", approver="ops")
    assert alice.take_run(decision.approval_id)["note"] == "alice's, later"
    assert [e.payload["approval_ids"] for e in engine.audit_events(type="run.suspended")] == [[decision.approval_id]] * 2


def test_an_admin_and_an_embedded_engine_are_not_owners(served: Any, tmp_path: Path) -> None:
    engine, c = served
    decision = c["alice-bot"].evaluate({"tool": "refund", "value": 10})
    c["alice-bot"].save_run("run_a", state("trc_a", "alice's"), [decision.approval_id])
    c["ops"].release_run("run_a")  # an admin acts for anyone
    with Engine(tmp_path / "embedded.db") as local:
        local.apply_rules(parse_rules(RULES))
        d = local.evaluate({"tool": "refund", "actor": "x"})
        local.save_run("r", state("t", "one"), [d.approval_id])
        local.save_run("r", state("t", "two"), [d.approval_id])
        local.release_run("r")
