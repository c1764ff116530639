"""The core flow on PostgreSQL, in a fresh database created for this module and dropped after.

Needs a server at 127.0.0.1:5432 (user postgres, trust auth) and psycopg (the ``postgres``
extra). Without them the module is skipped, except under CI (env ``CI`` set), where it fails
(the ``pg_url`` fixture, conftest.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clearance import Engine, parse_rules
from clearance.errors import AlreadyClaimed, ApprovalNotPending, DuplicateVote
from clearance.model import ApprovalStatus, DecisionResult, ExecutionStatus, OutcomeStatus

THREADS = 10

RULES = """
version: 1
rules:
  - id: refunds
    tool: refund
    require_approval_above: 100
    max_value: 10000
  - id: search-rate
    tool: search
    max_per_hour: 5
  - id: no-drops
    tool: drop_*
    effect: block
"""


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    eng = Engine(pg_url)
    eng.apply_rules(parse_rules(RULES))
    yield eng
    eng.close()


def race(engines: list[Engine], attempt: Callable[[Engine, int], Any]) -> list[tuple[str, Any]]:
    barrier = threading.Barrier(THREADS)
    results: list[tuple[str, Any]] = [("missing", None)] * THREADS

    def worker(i: int) -> None:
        eng = engines[i % len(engines)]
        barrier.wait()
        try:
            results[i] = ("ok", attempt(eng, i))
        except Exception as exc:  # noqa: BLE001
            results[i] = ("error", exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    return results


def test_schema_matches_the_metadata(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from clearance.store import migrate
    from clearance.store.schema import metadata

    assert migrate.current_revision(engine.store.engine) == migrate.head_revision()
    with engine.store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []


def test_decide_claim_record_outcome(engine: Engine, pg_url: str) -> None:
    d = engine.evaluate({"tool": "refund", "actor": "bot", "value": 20, "arguments": {"order": 1, "note": "ünïcode"}})
    assert d.allowed
    with Engine(pg_url) as other:
        assert other.get_decision(d.request_id) == d
        assert other.get_action(d.request_id).arguments == {"order": 1, "note": "ünïcode"}
    assert engine.evaluate({"tool": "refund", "actor": "bot", "value": 20000}).result is DecisionResult.blocked
    assert engine.evaluate({"tool": "drop_table", "actor": "bot"}).result is DecisionResult.blocked

    claim = engine.claim_execution(d.request_id, claimant="w", arguments={"note": "ünïcode", "order": 1})
    assert claim.status is ExecutionStatus.unknown
    with pytest.raises(AlreadyClaimed):
        engine.claim_execution(d.request_id, claimant="w2")
    assert engine.record_execution(d.request_id, "executed", {"id": 9}).status is ExecutionStatus.executed
    first = engine.report_outcome(d.request_id, "harmful", severity=0.5, cost=12.5, event_id=f"pg-{d.request_id}")
    assert engine.report_outcome(d.request_id, "harmful", severity=0.5, cost=12.5, event_id=f"pg-{d.request_id}") == first
    assert [o.status for o in engine.outcomes(d.request_id)] == [OutcomeStatus.harmful]


def test_kill_switch(engine: Engine) -> None:
    engine.activate_kill_switch(actor="rogue", reason="test")
    assert engine.evaluate({"tool": "search", "actor": "rogue"}).result is DecisionResult.blocked
    assert engine.deactivate_kill_switch(actor="rogue")
    assert engine.kill_switches() == []


def test_rate_limit_is_exact_under_contention(engine: Engine, pg_url: str) -> None:
    engines = [engine] + [Engine(pg_url) for _ in range(THREADS // 2 - 1)]
    try:
        results = race(engines, lambda e, i: e.evaluate({"tool": "search", "actor": "crawler", "arguments": {"q": i}}))
    finally:
        for e in engines[1:]:
            e.close()
    assert all(kind == "ok" for kind, _ in results), results
    assert Counter(d.result for _, d in results) == {DecisionResult.allowed: 5, DecisionResult.blocked: THREADS - 5}


def test_one_resolution_and_one_claim_win(engine: Engine, pg_url: str) -> None:
    d = engine.evaluate({"tool": "refund", "actor": "bot", "value": 500, "arguments": {"order": 2}})
    assert d.requires_approval
    engines = [engine] + [Engine(pg_url) for _ in range(THREADS // 2 - 1)]
    try:
        resolved = race(engines, lambda e, i: e.resolve_approval(d.approval_id, "approved", approver=f"p{i}"))
        wins = [v for kind, v in resolved if kind == "ok"]
        assert len(wins) == 1, resolved
        assert all(isinstance(v, (ApprovalNotPending, DuplicateVote)) for kind, v in resolved if kind == "error"), resolved
        assert engine.get_approval(d.approval_id).status is ApprovalStatus.approved

        claimed = race(engines, lambda e, i: e.claim_execution(d.request_id, claimant=f"w{i}"))
        assert sum(kind == "ok" for kind, _ in claimed) == 1, claimed
        assert all(isinstance(v, AlreadyClaimed) for kind, v in claimed if kind == "error"), claimed
    finally:
        for e in engines[1:]:
            e.close()


def test_audit_verifies_and_detects_tampering(engine: Engine, pg_url: str) -> None:
    from sqlalchemy import create_engine, text

    report = engine.verify_audit()
    assert report.ok and report.events_checked > 10
    types = {e.type for e in engine.audit_events(limit=1000)}
    assert {"rules.applied", "decision.made", "approval.requested", "approval.resolved", "execution.claimed",
            "execution.recorded", "outcome.reported", "kill_switch.activated", "kill_switch.deactivated"} <= types  # fmt: skip

    raw = create_engine(pg_url)
    try:
        with raw.begin() as conn:
            original = conn.execute(text("SELECT body FROM events WHERE seq = 2")).scalar_one()
            assert '"actor":"bot"' in original
            conn.execute(text("UPDATE events SET body = :b WHERE seq = 2"), {"b": original.replace('"actor":"bot"', '"actor":"eve"')})
        broken = engine.verify_audit()
        assert not broken.ok and broken.first_broken_seq == 2
        with raw.begin() as conn:
            conn.execute(text("UPDATE events SET body = :b WHERE seq = 2"), {"b": original})
        assert engine.verify_audit().ok
    finally:
        raw.dispose()


def test_verify_reads_one_snapshot(engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event committed by someone else while verify runs is not taken for tampering: verify
    reads the events and the chain head from one snapshot (READ COMMITTED would not)."""
    from clearance.store import SqlTx

    original = SqlTx.iter_events
    with Engine(pg_url) as other:

        def iter_then_append(self: SqlTx, *a: Any, **kw: Any) -> Iterator[dict[str, Any]]:
            yield from original(self, *a, **kw)
            other.evaluate({"tool": "search", "actor": "meanwhile"})  # commits on another connection

        monkeypatch.setattr(SqlTx, "iter_events", iter_then_append)
        report = engine.verify_audit()
        monkeypatch.undo()
        assert report.ok, report
        assert engine.verify_audit().events_checked == report.events_checked + 1


def test_memory_learns_across_engines_and_rebuilds_the_same(pg_url: str) -> None:
    """Learning works the same on PostgreSQL: one engine's outcomes judge another's calls, and
    a memory rebuilt from the audit log agrees with the live one."""
    import random

    from test_memory import Clock, fresh_iban, history, send

    from clearance.model import Action

    clock = Clock()
    with Engine(pg_url, clock=clock) as a, Engine(pg_url, clock=clock) as b:
        history(a, clock)
        clock.tick(minutes=3)
        caught = b.evaluate(send(fresh_iban(random.Random(11))))
        assert caught.result is not DecisionResult.allowed and caught.evidence > 2, caught.reason
        assert any(p.outcome == "harmful" for p in caught.precedents)
        with Engine(pg_url, clock=clock) as rebuilt:
            assert rebuilt.warm_memory() == a.warm_memory() == b.warm_memory()
            probe = Action.model_validate(send(fresh_iban(random.Random(12)), 180))
            assert rebuilt.memory.assess(probe, clock()) == a.memory.assess(probe, clock())
