"""The in-memory engine (``Engine(":memory:")``, ``sqlite:///:memory:``): the same behaviour as
on a file (decisions, approvals, rate limits, executions, outcomes, a verified audit chain),
from several threads at once, and nothing written to disk."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from clearance.engine.core import Engine
from clearance.model import ApprovalStatus, DecisionResult
from clearance.policy import RuleFile

RULES = RuleFile.model_validate({"version": 1, "rules": [
    {"id": "review", "tool": "refund", "require_approval_above": 100},
    {"id": "hourly", "tool": "pay", "max_per_hour": 3},
]})  # fmt: skip


@pytest.mark.parametrize("location", [":memory:", "sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_engine_decides_approves_learns_and_verifies(location: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with Engine(location, rules=RULES) as engine:
        assert engine.evaluate({"tool": "refund", "actor": "bot", "value": 20}).allowed
        waiting = engine.evaluate({"tool": "refund", "actor": "bot", "value": 500})
        assert waiting.result is DecisionResult.requires_approval
        [approval] = engine.list_approvals(ApprovalStatus.pending)
        assert engine.resolve_approval(approval.approval_id, "approved", approver="ana").status is ApprovalStatus.approved
        engine.record_execution(waiting.request_id, "executed")
        engine.report_outcome(waiting.request_id, "harmful", severity=0.9, cost=500.0)
        assert [engine.evaluate({"tool": "pay", "actor": "bot"}).allowed for _ in range(4)] == [True, True, True, False]
        report = engine.verify_audit()
        assert report.ok and report.events_checked >= 10
        assert engine.get_decision(waiting.request_id).result is DecisionResult.requires_approval
    assert os.listdir(tmp_path) == []  # nothing on disk: no database, WAL, key or snapshot file


def test_two_in_memory_engines_are_separate() -> None:
    with Engine(":memory:") as a, Engine(":memory:") as b:
        a.evaluate({"tool": "pay", "actor": "bot"})
        assert a.verify_audit().events_checked == 1
        assert b.verify_audit().events_checked == 0


def test_threads_share_an_in_memory_engine() -> None:
    """Writers and readers on several threads take turns on the one connection: every
    decision is kept, counted exactly, and the chain verifies."""
    with Engine(":memory:", rules=RULES) as engine:
        results: list[bool] = []
        errors: list[BaseException] = []

        def work(actor: str) -> None:
            try:
                for _ in range(20):
                    results.append(engine.evaluate({"tool": "pay", "actor": actor}).allowed)
                    engine.list_decisions(limit=5)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"bot-{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert results.count(True) == 4 * 3  # each actor's hourly limit, exactly
        assert engine.verify_audit().events_checked == 80


def test_a_batch_on_an_in_memory_engine_reads_its_own_writes() -> None:
    with Engine(":memory:") as engine:
        with engine.store.batch():
            d = engine.evaluate({"tool": "pay", "actor": "bot"})
            assert engine.get_decision(d.request_id) is not None  # a read inside the batch sees it
        assert engine.verify_audit().ok
