"""Restarts from a memory snapshot: same memory as a rebuild, and never a wrong one.

A snapshot is loaded only when it matches the store (readable, same settings, same chain at its
position); otherwise it is ignored with a warning and memory is rebuilt from the log.
"""

from __future__ import annotations

import logging
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from clearance.engine import Engine
from clearance.memory.cases import CaseMemory
from clearance.policy import RuleFile

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RULES = {"version": 1, "rules": [{"id": "big-pay", "domain": "shop", "tool": "pay", "require_approval_above": 400}]}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def action(rng: random.Random, i: int) -> dict[str, Any]:
    tool = rng.choice(["pay", "refund", "send_email"])
    return {"tool": tool, "actor": rng.choice(["a", "b"]), "domain": "shop", "value": rng.choice([5.0, 40.0, 90.0, 700.0]),
            "arguments": {"to": f"user{rng.randrange(12)}@{rng.choice(['ex.com', 'odd.biz'])}", "n": i % 7}}


def history(engine: Engine, rng: random.Random, n: int) -> None:
    """Decisions, a third with outcomes, some approvals answered (in one transaction: fast)."""
    with engine.store.batch(sync=False):
        _history(engine, rng, n)


def _history(engine: Engine, rng: random.Random, n: int) -> None:
    for i in range(n):
        a = action(rng, i)
        d = engine.evaluate(a)
        if d.approval_id is not None and i % 2:
            engine.resolve_approval(d.approval_id, "approved" if i % 4 == 1 else "rejected", approver="rev")
        if i % 3 == 0 and d.result.value != "blocked":
            status = "harmful" if "odd.biz" in a["arguments"]["to"] and i % 2 else "succeeded"
            engine.report_outcome(d.request_id, status, severity=0.8 if status == "harmful" else 0.0, cost=10.0)


PROBES = [action(random.Random(99), i) for i in range(25)]


def estimates(engine: Engine) -> list[Any]:
    engine.warm_memory()
    return [engine.memory.assess(engine_action(p), T0 + timedelta(days=2)) for p in PROBES]


def case_field(name: str) -> int:
    from clearance.memory.cases import _Case

    return _Case._fields.index(name)


def engine_action(data: dict[str, Any]) -> Any:
    from clearance.model import Action

    return Action.model_validate(data)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a snapshot taken midway (so a restart also catches up); tests copy it."""
    folder = tmp_path_factory.mktemp("restart")
    db = folder / "a.db"
    rng = random.Random(7)
    with Engine(db, rules=None, clock=Clock()) as engine:
        engine.apply_rules(RuleFile.model_validate(RULES))
        history(engine, rng, 90)
        assert engine.save_memory_snapshot().status == "saved"
        history(engine, rng, 40)  # after the snapshot: learnt on load by catching up
    return db


def fresh(db: Path, tmp_path: Path, *, snapshot: bool = True) -> Path:
    """A copy of the store ``db`` in ``tmp_path`` (with its snapshot, or without)."""
    for f in db.parent.iterdir():
        if f.is_file() and (snapshot or not f.name.endswith(".npz")):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path / db.name


def test_restart_with_snapshot_decides_as_a_rebuild(stores: Path, tmp_path: Path) -> None:
    db = stores
    (tmp_path / "s").mkdir()
    (tmp_path / "r").mkdir()
    with_snap = fresh(db, tmp_path / "s")
    rebuilt = fresh(db, tmp_path / "r", snapshot=False)
    a, b = Engine(with_snap, clock=Clock()), Engine(rebuilt, clock=Clock())
    try:
        assert estimates(a) == estimates(b)
        assert a.snapshot_loaded is not None and a.snapshot_loaded.status == "loaded"
        assert 0 < a.snapshot_loaded.seq < a.memory.cursor  # loaded, then caught up
        assert b.snapshot_loaded is not None and b.snapshot_loaded.status == "none"
        assert any(e.precedents for e in estimates(a))  # the comparison is about something
        # And the decisions made from here on, with outcomes in between, are the same.
        rng_a, rng_b = random.Random(3), random.Random(3)
        new_a: dict[str, int] = {}  # the calls decided here have request ids of their own in each store
        new_b: dict[str, int] = {}
        for i in range(30):
            da, db_ = a.evaluate(action(rng_a, i)), b.evaluate(action(rng_b, i))
            new_a[da.request_id], new_b[db_.request_id] = i, i
            assert (da.result, da.risk_score, da.risk_summary) == (db_.result, db_.risk_score, db_.risk_summary)
            assert ([(new_a.get(p.request_id, p.request_id), p.similarity) for p in da.precedents]
                    == [(new_b.get(p.request_id, p.request_id), p.similarity) for p in db_.precedents])  # fmt: skip
            if i % 2 and da.result.value != "blocked":
                a.report_outcome(da.request_id, "harmful", severity=0.9)
                b.report_outcome(db_.request_id, "harmful", severity=0.9)
    finally:
        a.close()
        b.close()


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"not a snapshot at all")


@pytest.mark.parametrize("damage", [corrupt, truncate, garbage])
def test_damaged_snapshot_is_ignored_with_a_warning(stores: Path, tmp_path: Path, damage: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    db = stores
    (tmp_path / "r").mkdir()
    path = fresh(db, tmp_path)
    rebuilt = fresh(db, tmp_path / "r", snapshot=False)
    damage(Path(str(path) + ".memory.npz"))
    with caplog.at_level(logging.WARNING, logger="clearance.memory"), Engine(path) as a, Engine(rebuilt) as b:
        got = estimates(a)
        assert a.snapshot_loaded is not None and a.snapshot_loaded.status == "ignored", a.snapshot_loaded
        assert got == estimates(b)
    assert any("ignored" in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records)


def test_snapshot_of_other_settings_is_ignored(stores: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    db = stores
    path = fresh(db, tmp_path)
    with caplog.at_level(logging.WARNING, logger="clearance.memory"), Engine(path, memory=CaseMemory(max_waiting=50)) as e:
        e.warm_memory()
        assert e.snapshot_loaded is not None and e.snapshot_loaded.status == "ignored"
        assert "max_waiting" in (e.snapshot_loaded.reason or "")
        assert e.memory.cursor > 0  # rebuilt from the log
    assert any("max_waiting" in r.getMessage() for r in caplog.records)


def test_snapshot_of_another_history_is_ignored(stores: Path, tmp_path: Path) -> None:
    """A snapshot whose chain position holds another event (another store, or a restored
    backup that went another way) is not this store's memory."""
    db = stores
    other = tmp_path / "other.db"
    with Engine(other, clock=Clock()) as e:
        history(e, random.Random(11), 200)  # as many events as the snapshot's position, and more
    shutil.copy(str(db) + ".memory.npz", str(other) + ".memory.npz")
    with Engine(other) as e:
        e.warm_memory()
        assert e.snapshot_loaded is not None and e.snapshot_loaded.status == "ignored"
        assert "differs" in (e.snapshot_loaded.reason or "")
    # And a snapshot ahead of the store (the store is an older backup) is not loaded either.
    short = tmp_path / "short.db"
    with Engine(short) as e:
        e.evaluate(PROBES[0])
    shutil.copy(str(db) + ".memory.npz", str(short) + ".memory.npz")
    with Engine(short) as e:
        e.warm_memory()
        assert e.snapshot_loaded is not None and e.snapshot_loaded.status == "ignored"
        assert "chain ends" in (e.snapshot_loaded.reason or "")


def test_late_outcome_is_learnt_from_the_stored_call(tmp_path: Path) -> None:
    """Memory stops waiting for old calls' outcomes; a late one is learnt from the stored action,
    featurised again, live and in a rebuild alike."""
    db = tmp_path / "late.db"
    with Engine(db, memory=CaseMemory(max_waiting=3), clock=Clock()) as e:
        first = e.evaluate({"tool": "pay", "actor": "a", "domain": "shop", "value": 10.0, "arguments": {"to": "x@ex.com"}})
        for i in range(6):
            e.evaluate({"tool": "pay", "actor": "a", "domain": "shop", "value": 10.0, "arguments": {"to": f"y{i}@ex.com"}})
        assert first.request_id not in e.memory._cases  # no longer waited for
        e.report_outcome(first.request_id, "harmful", severity=1.0, cost=50.0)
        probe = engine_action({"tool": "pay", "actor": "a", "domain": "shop", "value": 10.0, "arguments": {"to": "x@ex.com"}})
        e.warm_memory()
        live = e.memory.assess(probe, T0 + timedelta(days=1))
        assert e.memory.revived == 1
        case = e.memory._cases[first.request_id]
        assert case[case_field("outcome")] == "harmful" and case[case_field("row")] >= 0  # a precedent now
        assert ("email", "x@ex.com") in e.memory.features.bad_ids  # and its counterparty known bad
        assert live.risk > 0.15  # the harm counts (without it: the 5% a deployment starts from)
    with Engine(db, memory=CaseMemory(max_waiting=3)) as e:
        e.warm_memory()
        assert e.memory.assess(probe, T0 + timedelta(days=1)) == live


def test_server_answers_by_rules_alone_while_memory_warms(stores: Path, tmp_path: Path) -> None:
    """``warmup="rules"``: the server answers at once, saying memory is not consulted yet; once
    memory is ready, decisions use it. At shutdown it leaves a snapshot."""
    import threading

    from app_support import InProcessApp, InProcessRemoteEngine

    from clearance.engine.core import RULES_ONLY_WARMING
    from clearance.server.warmup import MemorySettings

    db = stores
    path = fresh(db, tmp_path, snapshot=False)
    engine = Engine(path)
    release = threading.Event()
    warm = engine.warm_memory

    def slow_warm(progress: Any = None) -> int:
        release.wait(30)
        return warm(progress)

    engine.warm_memory = slow_warm  # type: ignore[method-assign]
    _, token = engine.keys.create("t", "admin", identity="a")
    try:
        with InProcessApp(engine, memory=MemorySettings("rules", 0)) as app:
            remote = InProcessRemoteEngine(app, token)
            early = remote.evaluate(PROBES[0] | {"actor": "a"})
            assert early.risk_summary == RULES_ONLY_WARMING and early.precedents == [] and early.risk_score == 0.0
            release.set()
            deadline = __import__("time").monotonic() + 20
            while not engine.memory_warm and __import__("time").monotonic() < deadline:
                __import__("time").sleep(0.01)
            late = remote.evaluate(PROBES[0] | {"actor": "a"})
            assert late.risk_summary != RULES_ONLY_WARMING and late.evidence > 0
        assert Path(str(path) + ".memory.npz").exists()  # saved at shutdown
    finally:
        release.set()
        engine.close()


def test_memory_settings_are_checked() -> None:
    from clearance.server.warmup import MemorySettings

    assert MemorySettings.resolve("RULES", -1) == MemorySettings("rules", None)
    with pytest.raises(ValueError, match="not one of: wait, rules"):
        MemorySettings.resolve("later")


def test_snapshot_in_postgresql(pg_url: str) -> None:
    """A shared deployment keeps its snapshot in the database (chunked), every replica loads it,
    and the lean store's events read back whole there too (audit verify)."""
    with Engine(pg_url, clock=Clock()) as e:
        history(e, random.Random(2), 40)
        saved = e.save_memory_snapshot()
        assert saved.status == "saved" and saved.bytes > 0
        want = estimates(e)
        assert e.verify_audit().ok
    with Engine(pg_url) as e:
        assert estimates(e) == want
        assert e.snapshot_loaded is not None and e.snapshot_loaded.status == "loaded"


def test_memory_snapshot_command(stores: Path, tmp_path: Path) -> None:
    import json

    from cli_support import run_cli

    path = fresh(stores, tmp_path, snapshot=False)
    result = run_cli(["--db", str(path), "memory", "snapshot", "--json"])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["status"] == "saved" and info["place"] == str(path) + ".memory.npz" and info["seq"] > 0
    with Engine(path) as e:
        e.warm_memory()
        assert e.snapshot_loaded is not None and e.snapshot_loaded.status == "loaded"
