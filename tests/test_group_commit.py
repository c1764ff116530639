"""Group commit on the server's hot path, and the store's background WAL checkpointer.

Concurrent ``POST /v1/decisions`` are decided in batches, one transaction per batch: decisions
must stay exactly sequential (rate limits, audit chain), every caller must get its own decision,
and whatever the fast path cannot answer must get the regular route's answer.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from server_support import Live, assert_envelope

from clearance import Engine, parse_rules
from clearance.engine.batch import BatchWriter
from clearance.store import open_store

LIMITED = """
version: 1
rules:
  - id: five-per-hour
    tool: ping
    max_per_hour: 5
"""


def test_concurrent_decisions_through_the_server_are_sequential(live: Live) -> None:
    with Engine(live.db) as eng:
        eng.apply_rules(parse_rules(LIMITED))
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        r = live.client("agent").post("/v1/decisions", json={"tool": "ping", "arguments": {"i": i}},
                                      headers={"Idempotency-Key": f"k-{i}"})  # fmt: skip
        assert r.status_code == 200, r.text
        with lock:
            results.append(r.json())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({d["request_id"] for d in results}) == 24
    assert sum(d["result"] == "allowed" for d in results) == 5  # exactly the limit, never more
    with Engine(live.db) as eng:
        assert eng.verify_audit().ok
        assert len(eng.audit_events(type="decision.made", limit=1000)) == 24


def test_a_replayed_idempotency_key_gets_the_first_answer(live: Live) -> None:
    c = live.client("agent")
    first = c.post("/v1/decisions", json={"tool": "t"}, headers={"Idempotency-Key": "same"})
    again = c.post("/v1/decisions", json={"tool": "t"}, headers={"Idempotency-Key": "same"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "x-correlation-id" in again.headers


def test_what_the_fast_path_cannot_answer_gets_the_routes_answer(live: Live) -> None:
    c = live.client("agent")
    assert_envelope(c.post("/v1/decisions", json={"tool": "t", "actor": "someone-else"}), 403, "forbidden")
    assert_envelope(c.post("/v1/decisions", json={"arguments": {}}), 422, "validation_error")
    assert_envelope(live.client(None).post("/v1/decisions", json={"tool": "t"}), 401, "unauthorized")
    assert_envelope(live.client("approver").post("/v1/decisions", json={"tool": "t"}), 403, "forbidden")
    ok = c.post("/v1/decisions", json={"tool": "t"})
    assert ok.status_code == 200 and ok.json()["actor"] == "agent-7" and ok.headers["content-type"] == "application/json"
    with Engine(live.db) as eng:
        assert len(eng.audit_events(type="auth.refused", limit=100)) == 3


def test_an_operation_that_raises_undoes_only_its_own_writes(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "b.db")
    writer = BatchWriter(engine)

    def boom(tx: Any) -> None:
        engine.evaluate({"tool": "doomed"})
        raise RuntimeError("after deciding")

    async def main() -> list[Any]:
        futures = [writer.submit(lambda tx: engine.evaluate({"tool": "a"})), writer.submit(boom),
                   writer.submit(lambda tx: engine.evaluate({"tool": "b"}))]  # fmt: skip
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        a, failed, b = asyncio.run(main())
        assert isinstance(failed, RuntimeError)
        assert [e.payload["decision"]["tool"] for e in engine.audit_events(type="decision.made")] == ["a", "b"]
        assert engine.verify_audit().ok
    finally:
        writer.stop()
        engine.close()


def test_with_overlap_sync_nobody_hears_of_a_batch_before_its_fsync(tmp_path: Path) -> None:
    """The batch commits without waiting for the disk; its results wait for the fsync after it,
    and meanwhile this process's readers wait too."""
    engine = Engine(tmp_path / "o.db")
    store = engine.store
    writer = BatchWriter(engine, overlap_sync=True)
    entered, release = threading.Event(), threading.Event()
    real_sync = store.sync
    calls: list[int] = []

    def slow_sync() -> None:
        calls.append(1)
        entered.set()
        assert release.wait(10)
        real_sync()

    store.sync = slow_sync  # type: ignore[method-assign]

    async def main() -> list[Any]:
        futures = [writer.submit(lambda tx, i=i: engine.evaluate({"tool": f"t{i}"})) for i in range(3)]
        assert await asyncio.to_thread(entered.wait, 10)
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in futures), "results handed back before the fsync"
        release.set()
        return await asyncio.gather(*futures)

    try:
        decisions = asyncio.run(main())
        assert [d.tool for d in decisions] == ["t0", "t1", "t2"] and calls
        assert store._deferred.synced == store._deferred.unsynced > 0  # every deferred commit is known durable
        assert engine.verify_audit().ok
    finally:
        writer.stop()
        engine.close()


def test_a_failed_fsync_fails_the_committed_operations_as_not_durable(tmp_path: Path) -> None:
    from clearance.engine.batch import NotDurable

    engine = Engine(tmp_path / "f.db")
    writer = BatchWriter(engine, overlap_sync=True)

    def failing_sync() -> None:
        raise OSError(5, "Input/output error")

    engine.store.sync = failing_sync  # type: ignore[method-assign]

    def boom(tx: Any) -> None:
        raise RuntimeError("before deciding")

    async def main() -> list[Any]:
        return await asyncio.gather(writer.submit(lambda tx: engine.evaluate({"tool": "a"})), writer.submit(boom),
                                    return_exceptions=True)  # fmt: skip

    try:
        done, failed = asyncio.run(main())
        assert isinstance(done, NotDurable)  # committed: it must not be decided again
        assert isinstance(failed, RuntimeError)  # nothing of it was kept: its own error
    finally:
        writer.stop()
        del engine.store.sync
        engine.close()


def test_a_deferred_commit_is_synced_before_a_read_and_at_close(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    engine = Engine(store)
    try:
        with store.batch(sync=False):
            engine.evaluate({"tool": "t"})
        assert store._deferred.unsynced == 1 and store._deferred.synced == 0
        assert len(engine.audit_events(type="decision.made")) == 1  # read() synced first
        assert store._deferred.synced == 1
        with store.batch(sync=False):
            engine.evaluate({"tool": "u"})
    finally:
        engine.close()
    assert store._deferred.synced == store._deferred.unsynced == 2


def test_only_deferred_batches_commit_without_waiting_for_the_disk(tmp_path: Path) -> None:
    """The connection kept for ``batch(sync=False)`` is the only one set not to wait for the
    disk: every other write still does, while it is kept and after the store hands it back."""
    store = open_store(tmp_path / "s.db")
    engine = Engine(store)

    def synchronous(tx: Any) -> int:
        return int(tx.conn.exec_driver_sql("PRAGMA synchronous").scalar())

    try:
        for i in range(3):
            with store.batch(sync=False) as tx:
                assert synchronous(tx) == 1  # NORMAL: the commit is written to the WAL, fsynced by sync()
                engine.evaluate({"tool": "t", "arguments": {"i": i}})
        assert store._deferred.unsynced == 3
        with store.write() as tx:
            assert synchronous(tx) == 2  # FULL
        with store.batch() as tx:
            assert synchronous(tx) == 2
        kept = store._deferred.kept
        assert kept is not None
    finally:
        engine.close()
    assert store._deferred.synced == store._deferred.unsynced == 3 and kept.closed
    reopened = open_store(tmp_path / "s.db")
    try:  # whatever the pool kept is set as it was, and the deferred decisions are there
        with reopened.write() as tx:
            assert synchronous(tx) == 2
        assert len(Engine(reopened).audit_events(type="decision.made")) == 3
    finally:
        reopened.close()


def test_a_broken_kept_connection_is_replaced(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    engine = Engine(store)
    try:
        with store.batch(sync=False):
            engine.evaluate({"tool": "t"})
        first = store._deferred.kept
        assert first is not None
        first.invalidate()  # as after a disconnect: the pool discards it
        with store.batch(sync=False) as tx:
            assert int(tx.conn.exec_driver_sql("PRAGMA synchronous").scalar()) == 1
            engine.evaluate({"tool": "u"})
        assert store._deferred.kept is not first and store._deferred.unsynced == 2
    finally:
        engine.close()
    with Engine(tmp_path / "s.db") as reopened:
        assert len(reopened.audit_events(type="decision.made")) == 2


def test_savepoint_journals_and_sorts_stay_in_memory(tmp_path: Path) -> None:
    """A batch of many decisions (each a savepoint) spilled SQLite's sub-journal into a
    temporary file per batch; the store's connections keep temporary data in memory."""
    store = open_store(tmp_path / "s.db")
    try:
        with store.read() as tx:
            assert int(tx.conn.exec_driver_sql("PRAGMA temp_store").scalar()) == 2  # MEMORY
        with store.batch(sync=False) as tx:
            assert int(tx.conn.exec_driver_sql("PRAGMA temp_store").scalar()) == 2
    finally:
        store.close()


def test_inline_batches_are_decided_on_the_loop_but_never_wait_there_for_a_lock(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "i.db")
    writer = BatchWriter(engine, overlap_sync=True, inline=True)
    assert writer.inline
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.store.write():  # another writer of this process holds the store
            held.set()
            assert release.wait(10)

    async def main() -> list[Any]:
        first = await writer.submit(lambda tx: engine.evaluate({"tool": "free"}))  # on the loop's thread
        blocker = threading.Thread(target=hold)
        blocker.start()
        assert await asyncio.to_thread(held.wait, 10)
        waiting = writer.submit(lambda tx: (threading.current_thread().name, engine.evaluate({"tool": "held"})))
        await asyncio.sleep(0.05)  # the loop is free meanwhile (were it waiting for the lock, this would hang)
        assert not waiting.done()
        release.set()
        second = await waiting
        blocker.join()
        return [first, second]

    try:
        first, (thread, second) = asyncio.run(main())
        assert first.tool == "free" and second.tool == "held"
        assert thread == "clearance-batch-writer"  # the writer thread waited for the lock instead
        assert engine.verify_audit().ok
    finally:
        writer.stop()
        engine.close()


def _random_history(db: Path, seed: int, cached: bool) -> list[str]:
    """Two engines on one file take turns deciding under an hourly and a daily limit, with
    reservations that are approved, rejected, left to lapse or not run, while time moves on."""
    import random
    from datetime import datetime, timedelta, timezone

    from clearance.policy import RuleFile

    rules = RuleFile.model_validate({"version": 1, "rules": [
        {"id": "hourly", "tool": "pay", "max_per_hour": 6}, {"id": "daily", "tool": "pay", "max_per_day": 15},
        {"id": "review", "tool": "pay", "when": '"review" in args', "effect": "require_approval", "approval_ttl": "10m"},
    ]})  # fmt: skip
    now = [datetime(2024, 5, 6, 10, 0, tzinfo=timezone.utc)]
    engines = [Engine(db, rules=rules, clock=lambda: now[0]) for _ in range(2)]
    if not cached:
        for e in engines:
            e.store._counts = None
    rng = random.Random(seed)
    seen: list[str] = []
    pending: list[Any] = []
    try:
        for _ in range(160):
            eng = engines[rng.random() < 0.3]  # mostly one engine, so its counts stay valid for a while
            roll = rng.random()
            if roll < 0.15 and pending:
                d = pending.pop(rng.randrange(len(pending)))
                try:
                    eng.resolve_approval(d.approval_id, rng.choice(["approved", "rejected"]), approver="boss")
                    if rng.random() < 0.5:
                        eng.record_execution(d.request_id, "not_run")
                except Exception as exc:  # noqa: BLE001 - e.g. lapsed: part of the history
                    seen.append(type(exc).__name__)
            elif roll < 0.25:
                now[0] += timedelta(minutes=rng.choice([1, 7, 30, 61]))
            else:
                actor = rng.choice(["a", "a", "b"])
                d = eng.evaluate({"tool": "pay", "actor": actor, "arguments": {"review": True} if rng.random() < 0.2 else {}})
                seen.append(f"{actor}:{d.result.value}:{[m.rule_id for m in d.matched_rules]}")
                if d.requires_approval:
                    pending.append(d)
        if cached:
            assert any(e.store._counts.loads for e in engines)  # type: ignore[union-attr]
    finally:
        for e in engines:
            e.close()
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rate_limits_counted_in_memory_decide_as_counting_in_sql_does(tmp_path: Path, seed: int) -> None:
    assert _random_history(tmp_path / "c.db", seed, cached=True) == _random_history(tmp_path / "s.db", seed, cached=False)


def _wal_frames(db: Path) -> int:
    """Frames in the WAL since it last started from its beginning (its header's salt)."""
    data = (db.parent / f"{db.name}-wal").read_bytes()
    page = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    frames, off = 0, 32
    while off + 24 + page <= len(data) and data[off + 8:off + 16] == salt:
        frames, off = frames + 1, off + 24 + page
    return frames


def test_the_checkpointer_copies_the_wal_back_and_the_wal_restarts(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    store = open_store(db)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 4000  # the fallback stays
    engine = Engine(store)
    try:
        for i in range(1500):  # ~20,000 WAL pages
            engine.evaluate({"tool": "t", "arguments": {"i": i, "pad": "x" * 500}})
        ck = store._checkpointer
        assert ck is not None and ck.runs > 0
        assert _wal_frames(db) <= 4000 + 100  # restarted by the autocheckpoint, which had little to copy
    finally:
        engine.close()
    assert ck._thread is not None and not ck._thread.is_alive()  # stopped with the engine


@pytest.mark.parametrize("engines", [4])
def test_many_engines_on_one_file_each_checkpoint_without_blocking(tmp_path: Path, engines: int) -> None:
    db = tmp_path / "m.db"
    Engine(db).close()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with Engine(db) as eng:
                for i in range(150):
                    eng.evaluate({"tool": f"t{k}", "arguments": {"i": i}})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Engine(db) as eng:
        report = eng.verify_audit()
        assert report.ok and report.events_checked == engines * 150
    assert os.path.getsize(db) > 0
