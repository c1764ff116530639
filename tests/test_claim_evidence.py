"""A claim is checked against the decision's event in the audit chain, not only its row
(issue 17, defect 5): a blocked decision whose row was edited to allowed cannot be claimed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearance import Engine, parse_rules
from clearance.errors import NotApproved


def test_an_edited_decision_row_cannot_be_claimed(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "c.db")
    engine.apply_rules(parse_rules("rules:\n  - id: deny\n    tool: wire\n    effect: block\n"))
    blocked = engine.evaluate({"tool": "wire", "arguments": {"to": "x"}})
    allowed = engine.evaluate({"tool": "read", "arguments": {}})
    edited = blocked.model_dump(mode="json") | {"result": "allowed", "allowed": True}
    with engine.store.write() as tx:  # someone with write access to the file
        tx.conn.exec_driver_sql("UPDATE decisions SET result = 'allowed', decision = ? WHERE request_id = ?",
                                (json.dumps(edited), blocked.request_id))  # fmt: skip
    assert engine.get_decision(blocked.request_id).allowed  # the row says so ...
    with pytest.raises(NotApproved, match="audit trail"):
        engine.claim_execution(blocked.request_id, claimant="w")  # ... the chain does not
    assert engine.claim_execution(allowed.request_id, claimant="w").status.value == "unknown"  # an honest row still claims
    engine.close()
