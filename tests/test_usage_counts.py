"""The SQLite store's in-memory rate-limit counts (``store/sqlite/counts.py``) against the
``usage`` table they stand for: the same numbers as SQL's count, through pending approvals,
answers, expiry, releases and a moving window, and kept current rather than reloaded."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from clearance.engine.core import Engine
from clearance.model import ApprovalStatus
from clearance.policy import RuleFile
from clearance.store.sqlite.counts import _SCALE, _Series

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=timezone.utc)


def _stamp(second: int) -> str:
    return f"2024-05-06 {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"


def test_a_series_counts_and_adds_up_what_a_rescan_of_its_slots_does() -> None:
    """Random adds (permanent and reservations, with values), releases and counts with a window
    and a clock that only move forward: the kept count and total equal those of every slot
    counted again each time (the total exactly, rounded once)."""
    rng = random.Random(21)
    for trial in range(40):
        floor, now = 0, 600
        series = _Series(_stamp(floor))
        slots: list[tuple[str, str | None, float | None]] = []  # the holding slots added, at > floor
        for _ in range(300):
            op = rng.random()
            if op < 0.5:
                at = now - rng.randrange(0, 120) if rng.random() < 0.3 else now
                expires = None if rng.random() < 0.4 else _stamp(at + rng.randrange(-30, 400))
                value = rng.choice([None, 0.0, 0.1, 0.2, 0.3, 19.99, 1e-9, 12345.678])
                series.add(_stamp(at), expires, value)
                if _stamp(at) > _stamp(floor):
                    slots.append((_stamp(at), expires, value))
            elif op < 0.6 and slots:
                victim = rng.choice(slots)
                assert series.discard(*victim)
                slots.remove(victim)
            else:
                now += rng.randrange(0, 40)
                floor = max(floor, now - 300)
                slots = [s for s in slots if s[0] > _stamp(floor) and (s[1] is None or s[1] > _stamp(now))]
                assert series.count(_stamp(floor), _stamp(now)) == len(slots), trial
                assert series.cents / _SCALE == math.fsum(v or 0.0 for _, _, v in slots), trial


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_pending_approvals_answered_keep_counts_and_totals_without_reloading(tmp_path: Path) -> None:
    """Many pending approvals for one actor, some approved, some rejected, some expired: the
    in-memory count equals SQL's after each step, and answering an approval updates the kept
    window instead of dropping it (no reload from the table)."""
    rules = RuleFile.model_validate({"version": 1, "rules": [
        {"id": "cap", "tool": "pay", "max_per_hour": 1000},
        {"id": "review", "tool": "pay", "require_approval_above": 100, "approval_ttl": "10m"},
        {"id": "spend", "tool": "pay", "budget": 1e9},
    ]})  # fmt: skip
    clock = Clock()
    with Engine(tmp_path / "x.db", rules=rules, clock=clock) as engine:
        store = engine.store
        counts = store._counts
        assert counts is not None

        def both() -> tuple[int, int]:
            now = clock.now
            since = now - timedelta(hours=1)
            day = now - timedelta(days=1)
            with store.read() as tx:
                total, sql_total = counts.total(tx._sqlite, "spend", "agent", day, now), tx.total_value("spend", "agent", day, now)
                assert total == sql_total
                return counts.count(tx._sqlite, "cap", "agent", since, now, None), tx.count("cap", "agent", since, now)

        def pay(value: float) -> str:
            clock.now += timedelta(seconds=3)
            d = engine.evaluate({"tool": "pay", "actor": "agent", "value": value, "arguments": {}})
            return d.request_id

        pending = [pay(500) for _ in range(60)]
        for _ in range(20):
            pay(5)
        loads = counts.loads
        approvals = {a.request_id: a for a in engine.list_approvals(status=ApprovalStatus.pending)}
        for i, request_id in enumerate(pending[:30]):
            answer = "approved" if i % 2 else "rejected"
            engine.resolve_approval(approvals[request_id].approval_id, answer, approver="reviewer")
            pay(5)  # (a store that dropped its counts counts this one in SQL, and reloads on the next)
            pay(5)
        assert counts.loads == loads  # answered approvals updated the kept windows
        kept, sql = both()
        assert kept == sql == 30 + 15 + 20 + 60  # still pending, approved, small ones, two per answer
        clock.now += timedelta(minutes=11)  # the 30 still pending expire
        kept, sql = both()
        assert kept == sql == 15 + 20 + 60  # the pending ones expired
        clock.now += timedelta(minutes=50)  # the window leaves the earliest calls behind
        kept, sql = both()
        assert kept == sql



def test_many_actors_make_room_one_window_at_a_time(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past the windows kept at most, the one used longest ago makes room: the others stay
    (a full store would otherwise start again and reload every busy actor's window)."""
    from clearance.store.sqlite.counts import UsageCounts

    monkeypatch.setattr(UsageCounts, "MAX_SERIES", 3)
    rules = RuleFile.model_validate({"version": 1, "rules": [{"id": "cap", "tool": "pay", "max_per_hour": 2}]})
    clock = Clock()
    with Engine(tmp_path / "x.db", rules=rules, clock=clock) as engine:
        counts = engine.store._counts
        assert counts is not None

        def pay(actor: str) -> bool:
            clock.now += timedelta(seconds=1)
            return engine.evaluate({"tool": "pay", "actor": actor, "arguments": {}}).allowed

        assert [pay(a) for a in ("a", "b", "c", "a")] == [True, True, True, True]
        assert pay("d")  # "b" was used longest ago
        assert sorted(actor for _, actor, _ in counts.series) == ["a", "c", "d"]
        assert [pay(a) for a in ("a", "b", "b", "c", "d")] == [False, True, False, True, True]
