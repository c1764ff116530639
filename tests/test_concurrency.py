"""Races: of many simultaneous attempts, exactly the right number take effect.

Each race runs twice: 20 threads sharing one Engine, and 20 threads each with its own Engine
on the same file (as separate workers of one deployment would be).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clearance import Engine, parse_rules
from clearance.errors import AlreadyClaimed, ApprovalNotPending, DuplicateVote
from clearance.model import ApprovalStatus, DecisionResult

N = 20

RULES = """
version: 1
rules:
  - id: big-refunds
    tool: refund
    require_approval_above: 100
  - id: search-rate
    tool: search
    max_per_hour: 5
"""


def race(engines: list[Engine], attempt: Callable[[Engine, int], Any]) -> list[tuple[str, Any]]:
    """Run ``attempt`` on N threads released together; collect ("ok", value) or ("error", exc)."""
    barrier = threading.Barrier(N)
    results: list[tuple[str, Any]] = [("missing", None)] * N

    def worker(i: int) -> None:
        eng = engines[i % len(engines)]
        barrier.wait()
        try:
            results[i] = ("ok", attempt(eng, i))
        except Exception as exc:  # noqa: BLE001 - every outcome is inspected below
            results[i] = ("error", exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a worker hung"
    return results


@pytest.fixture(params=["shared", "separate"])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Engine]]:
    db = tmp_path / "clearance.db"
    first = Engine(db)
    first.apply_rules(parse_rules(RULES))
    pool = [first] if request.param == "shared" else [first] + [Engine(db) for _ in range(N - 1)]
    yield pool
    for eng in pool:
        eng.close()


def oks(results: list[tuple[str, Any]]) -> list[Any]:
    return [v for kind, v in results if kind == "ok"]


def errors(results: list[tuple[str, Any]]) -> list[BaseException]:
    return [v for kind, v in results if kind == "error"]


def test_one_resolution_wins(engines: list[Engine]) -> None:
    eng = engines[0]
    d = eng.evaluate({"tool": "refund", "actor": "agent", "value": 500, "arguments": {"order": 1}})
    results = race(engines, lambda e, i: e.resolve_approval(
        d.approval_id, "approved" if i % 2 else "rejected", approver=f"person-{i}", comment=f"#{i}"))  # fmt: skip

    winners = oks(results)
    assert len(winners) == 1, results
    losers = errors(results)
    assert len(losers) == N - 1
    assert all(isinstance(e, (ApprovalNotPending, DuplicateVote)) for e in losers), losers

    final = eng.get_approval(d.approval_id)
    assert final.status is winners[0].status and final.status in (ApprovalStatus.approved, ApprovalStatus.rejected)
    assert final.resolved_by == winners[0].resolved_by
    assert len(final.votes) == 1
    assert len(eng.audit_events(type="approval.resolved")) == 1
    assert eng.verify_audit().ok


def test_one_claim_wins(engines: list[Engine]) -> None:
    eng = engines[0]
    d = eng.evaluate({"tool": "refund", "actor": "agent", "value": 500, "arguments": {"order": 2}})
    eng.resolve_approval(d.approval_id, "approved", approver="alice")
    results = race(engines, lambda e, i: e.claim_execution(d.request_id, claimant=f"worker-{i}", arguments={"order": 2}))

    winners = oks(results)
    assert len(winners) == 1, results
    losers = errors(results)
    assert len(losers) == N - 1 and all(isinstance(e, AlreadyClaimed) for e in losers), losers
    assert eng.get_execution(d.request_id).claimed_by == winners[0].claimed_by
    assert len(eng.audit_events(type="execution.claimed")) == 1
    assert eng.verify_audit().ok


def test_rate_limit_is_exact_under_contention(engines: list[Engine]) -> None:
    results = race(engines, lambda e, i: e.evaluate({"tool": "search", "actor": "agent", "arguments": {"q": i}}))
    assert not errors(results), errors(results)
    counts = Counter(d.result for d in oks(results))
    assert counts == {DecisionResult.allowed: 5, DecisionResult.blocked: N - 5}
    eng = engines[0]
    assert len(eng.audit_events(type="decision.made", limit=1000)) == N
    assert eng.verify_audit().ok


def test_concurrent_writers_keep_one_linear_chain(engines: list[Engine]) -> None:
    def mixed(e: Engine, i: int) -> None:
        d = e.evaluate({"tool": "search", "actor": f"agent-{i}", "arguments": {"q": i}})
        e.claim_execution(d.request_id, claimant=f"w-{i}")
        e.record_execution(d.request_id, "executed")
        e.report_outcome(d.request_id, "succeeded", event_id=f"out-{i}")

    results = race(engines, mixed)
    assert not errors(results), errors(results)
    report = engines[0].verify_audit()
    assert report.ok and report.events_checked == 1 + 4 * N  # rules.applied, then 4 per worker


def test_first_open_of_a_fresh_file_from_many_threads(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    opened: list[Engine] = []
    lock = threading.Lock()

    def open_and_decide(_: Engine | None, i: int) -> str:
        eng = Engine(db)
        with lock:
            opened.append(eng)
        return eng.evaluate({"tool": "t", "arguments": {"i": i}}).request_id

    try:
        results = race([None] * N, open_and_decide)  # type: ignore[list-item]
        assert not errors(results), errors(results)
        assert len(set(oks(results))) == N
        assert opened[0].verify_audit().events_checked == N
    finally:
        for eng in opened:
            eng.close()


def test_verify_reads_one_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event committed by another engine while verify runs is not taken for tampering."""
    from clearance.store import SqlTx

    db = tmp_path / "clearance.db"
    original = SqlTx.iter_events
    with Engine(db) as eng, Engine(db) as other:
        for i in range(5):
            eng.evaluate({"tool": "search", "arguments": {"i": i}})

        def iter_then_append(self: SqlTx, *a: Any, **kw: Any) -> Iterator[dict[str, Any]]:
            yield from original(self, *a, **kw)
            other.evaluate({"tool": "search", "actor": "meanwhile"})  # commits on another connection

        monkeypatch.setattr(SqlTx, "iter_events", iter_then_append)
        report = eng.verify_audit()
        monkeypatch.undo()
        assert report.ok and report.events_checked == 5, report
        assert eng.verify_audit().events_checked == 6
