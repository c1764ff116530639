"""The snapshot's format: every part of memory read back exactly as it was saved, read in place
without running anything it holds, and the drift streams saved with it so a restart reads only
the outcomes after it. (tests/test_restart.py covers the engine's side: decisions after a
restart, damaged and mismatched snapshots ignored.)"""

from __future__ import annotations

import io
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clearance.engine import Engine
from clearance.memory import snapshot
from clearance.memory.cases import CaseMemory
from clearance.memory.drift import DriftMonitor, DriftSettings
from clearance.memory.features import DIM
from clearance.policy import RuleFile

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RULES = {"version": 1, "rules": [{"id": "big-pay", "domain": "shop", "tool": "pay", "require_approval_above": 400}]}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1, microseconds=137)  # microseconds too: times must come back exact
        return self.now


def action(rng: random.Random, i: int) -> dict[str, Any]:
    tool = rng.choice(["pay", "refund", "send_email"])
    args: dict[str, Any] = {"to": f"user{rng.randrange(40)}@{rng.choice(['ex.com', 'odd.biz'])}", "n": i % 7}
    if tool != "send_email":
        args["iban"] = f"DE{rng.randrange(10**20):020d}"
    return {"tool": tool, "actor": rng.choice(["a", "b", "c"]), "domain": "shop",
            "value": rng.choice([5.0, 40.0, 90.0, 700.0]), "arguments": args}  # fmt: skip


def history(engine: Engine, rng: random.Random, n: int, start: int = 0) -> None:
    with engine.store.batch(sync=False):
        for i in range(start, start + n):
            a = action(rng, i)
            d = engine.evaluate(a)
            if d.approval_id is not None and i % 2:
                engine.resolve_approval(d.approval_id, "approved" if i % 4 == 1 else "rejected", approver="rev")
            if i % 3 == 0 and d.result.value != "blocked":
                bad = "odd.biz" in a["arguments"]["to"] and i % 2
                engine.report_outcome(d.request_id, "harmful" if bad else "succeeded", severity=0.8 if bad else 0.0,
                                      cost=10.0)  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose memory was saved after 160 decisions, then 40 more decided after it."""
    db = tmp_path_factory.mktemp("snap") / "s.db"
    rng = random.Random(5)
    with Engine(db, clock=Clock()) as engine:
        engine.apply_rules(RuleFile.model_validate(RULES))
        history(engine, rng, 160)
        engine.warm_memory()
        assert engine.save_memory_snapshot().status == "saved"
        history(engine, rng, 40, start=160)
    return db


def state(memory: CaseMemory) -> dict[str, Any]:
    """Everything memory knows, in comparable form (indexes by what they find)."""
    f = memory.features
    cases = {rid: tuple(v.tolist() if isinstance(v, np.ndarray) else v for v in case)
             for rid, case in memory._cases.items()}
    cols = memory._cols
    probes = np.random.default_rng(0).random((5, DIM), dtype=np.float32)
    found = {part: [index.search(p, 5) for p in probes] for part, index in memory._parts.items()}
    return {
        "cases": cases, "recent": list(memory._recent), "names": memory._names, "members": memory._members,
        "proto_of": memory._proto_of, "part_ids": memory._part_ids, "found": repr(found),
        "cols": [getattr(cols, n)[: cols.n].tolist() for n in ("t", "w", "bad", "tool", "domain")],
        "counters": [getattr(memory, n) for n in snapshot._COUNTERS + snapshot._PAIR_COUNTERS],
        "all": memory._all, "next_key": memory._next_key, "revived": memory.revived,
        "features": [f.good_ids, f.bad_ids, f.keysets, f.tokens, f.calls,
                     {k: (s.n, s.mean, s.m2) for k, s in f.tool_values.items()},
                     {k: (s.n, s.mean, s.m2) for k, s in f.actor_values.items()}],
        "reviewer": [getattr(memory.reviewer, s) for s in type(memory.reviewer).__slots__],
        "noise": [memory.noise.groups, memory.noise.big, memory.noise.limit, memory.noise._fresh, memory.noise._rate],
        "cursor": (memory.cursor, memory.cursor_hash),
    }  # fmt: skip


def rebuilt(db: Path) -> CaseMemory:
    with Engine(db) as engine:
        engine.snapshots.enabled = False
        engine.warm_memory()
        return engine.memory  # type: ignore[return-value]


def test_every_part_of_memory_reads_back_as_saved(store: Path) -> None:
    memory = rebuilt(store)
    assert memory._cases and memory.features.tokens and memory.noise.groups  # the comparison is about something
    assert any(len(case[4]) > 1 for case in memory._cases.values())  # calls with several identifiers
    data = snapshot.dump(memory)
    again = CaseMemory()
    assert snapshot.load(data, again) is None  # no drift streams were saved with it
    assert state(again) == state(memory)
    # Identical values are one object again, not a string per case (what a million cases cost).
    tools = {id(case[1]) for case in again._cases.values()}
    assert len(tools) == len({case[1] for case in again._cases.values()})


def test_strings_that_are_not_lines_still_read_back() -> None:
    values = ["plain", "two\nlines", "cr\rreturn", ""]
    assert snapshot._unlines(snapshot._lines(values)) == values
    assert snapshot._unlines(snapshot._lines(["a", "", "b"])) == ["a", "", "b"]
    assert snapshot._unlines(snapshot._lines([])) == []


def test_times_read_back_exactly() -> None:
    memory = CaseMemory()
    base = datetime(2026, 5, 4, 3, 2, 1, 999_999, tzinfo=timezone.utc)
    times = [base + timedelta(microseconds=k * 7919) for k in range(2000)]
    times.append(datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=timezone.utc))  # before the epoch
    for i, t in enumerate(times):
        memory._cases[f"r{i}"] = (f"r{i}", "t", "d", t, (), None, None, "s", -1, None, 0.0, None, None, None, False,
                                  0.0, 0, False)  # fmt: skip
        memory._recent.append(f"r{i}")
    again = CaseMemory()
    snapshot.load(snapshot.dump(memory), again)
    assert [c[3] for c in again._cases.values()] == times


def test_an_array_of_objects_is_refused_without_being_unpickled(store: Path, tmp_path: Path) -> None:
    """A snapshot is data: a member that would need unpickling is refused, never run."""
    memory = rebuilt(store)
    members = dict(np.load(io.BytesIO(snapshot.dump(memory)), allow_pickle=False))
    ran = tmp_path / "ran"
    members["state"] = np.array([_Boom(str(ran))], dtype=object)
    out = io.BytesIO()
    np.savez(out, **members)
    with pytest.raises(snapshot.SnapshotError, match="objects"):
        snapshot.load(out.getvalue(), CaseMemory())
    assert not ran.exists()


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_drift_streams_come_with_the_snapshot(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart reads only the outcomes recorded after the snapshot, and ends with the same
    drift streams as reading them all."""
    import clearance.engine.drift as drift_module

    read_from: list[int] = []
    real = drift_module.outcome_events

    def spy(tx: Any, after_seq: int, before_seq: int | None = None) -> Any:
        read_from.append(after_seq)
        return real(tx, after_seq, before_seq)

    with Engine(store) as cold:
        cold.snapshots.enabled = False
        cold.warm_memory()
        expected = cold.drift.copy()
    monkeypatch.setattr(drift_module, "outcome_events", spy)
    with Engine(store) as engine:
        engine.warm_memory()
        assert engine.snapshot_loaded is not None and engine.snapshot_loaded.status == "loaded"
        got = engine.drift.copy()
    assert read_from and min(read_from) >= engine.snapshot_loaded.seq > 0
    assert got.streams == expected.streams and got.cursor == expected.cursor
    assert any(s.n > 10 for s in got.streams.values())


def test_drift_streams_ahead_of_memory_or_of_other_settings_are_not_used(store: Path) -> None:
    memory = rebuilt(store)
    ahead = DriftMonitor(DriftSettings(), cursor=memory.cursor + 1)
    data = snapshot.dump(memory, ahead)
    assert snapshot.load(data, CaseMemory(), DriftSettings()) is None
    level = DriftMonitor(DriftSettings(), cursor=memory.cursor)
    data = snapshot.dump(memory, level)
    assert snapshot.load(data, CaseMemory(), DriftSettings(threshold=10.0)) is None
    got = snapshot.load(data, CaseMemory(), DriftSettings())
    assert got is not None and got.cursor == memory.cursor
