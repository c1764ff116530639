"""Retention: ``prune`` archives and deletes old history, and nothing that matters changes:
``audit verify`` stays clean (from the chain's cut), memory judges as before, before and after a
restart, and the archive holds the whole chain up to the cut."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_support import run_cli

from clearance.engine import Engine
from clearance.engine.audit import link_hash
from clearance.model import Action
from clearance.store import GENESIS

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def call(rng: random.Random) -> dict[str, Any]:
    return {"tool": rng.choice(["pay", "refund"]), "actor": "a", "domain": "shop", "value": rng.choice([5.0, 50.0, 500.0]),
            "arguments": {"to": f"u{rng.randrange(8)}@{rng.choice(['ex.com', 'odd.biz'])}"}}  # fmt: skip


PROBES = [Action.model_validate(call(random.Random(5 + i))) for i in range(12)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten days of history, a decision every two hours and a third with outcomes (memory asks
    a person about some calls, and their approvals are left pending). Built once; each test
    prunes a copy."""
    db, clock, rng = tmp_path_factory.mktemp("retention") / "r.db", Clock(), random.Random(1)
    with Engine(db, clock=clock) as e:
        with e.store.batch(sync=False):
            for i in range(120):
                clock.now = T0 + timedelta(hours=2 * i)
                c = call(rng)
                d = e.evaluate(c)
                if i % 3 == 0:
                    bad = "odd.biz" in c["arguments"]["to"] and i % 2 == 0
                    e.report_outcome(d.request_id, "harmful" if bad else "succeeded", severity=0.9 if bad else 0.0)
    return db


@pytest.fixture
def store(built: Path, tmp_path: Path) -> tuple[Path, Clock]:
    for f in built.parent.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    clock = Clock()
    clock.now = T0 + timedelta(days=11)
    return tmp_path / built.name, clock


def leaving(db: Path, before: datetime) -> tuple[int, int]:
    """Decisions (and outcomes) made before ``before`` that a prune removes: not those whose
    approval is still pending."""
    with sqlite3.connect(db) as conn:
        cutoff = before.replace(tzinfo=None).isoformat(sep=" ")
        keep = "request_id NOT IN (SELECT request_id FROM approvals WHERE status = 'pending')"
        n = conn.execute(f"SELECT count(*) FROM decisions WHERE decided_at < ? AND {keep}", (cutoff,)).fetchone()[0]
        o = conn.execute(f"SELECT count(*) FROM outcomes WHERE request_id IN (SELECT request_id FROM decisions "
                         f"WHERE decided_at < ? AND {keep})", (cutoff,)).fetchone()[0]  # fmt: skip
    conn.close()
    return n, o


def estimates(e: Engine) -> list[Any]:
    e.warm_memory()
    return [e.memory.assess(p, T0 + timedelta(days=12)) for p in PROBES]


def test_prune_keeps_audit_clean_and_memory_the_same(store: tuple[Path, Clock], tmp_path: Path) -> None:
    db, clock = store
    with Engine(db, clock=clock) as e:
        before = estimates(e)
        assert any(est.precedents for est in before)
        n, o = leaving(db, T0 + timedelta(days=6))
        assert n > 50 and o > 15
        kept = 120 - n
        report = e.prune(T0 + timedelta(days=6))
        assert e.verify_audit().ok, e.verify_audit()
        assert estimates(e) == before  # live memory: nothing forgotten
        assert (report.deleted["decisions"], report.deleted["outcomes"]) == (n, o)
        again = e.prune(T0 + timedelta(days=6))  # nothing more to do
        assert again.archive is None and again.cut_seq == report.cut_seq
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == kept
        assert conn.execute("SELECT min(seq) FROM events").fetchone()[0] == report.cut_seq + 1
    conn.close()
    with Engine(db, clock=clock) as e:  # a restart: the snapshot saved after the cut
        assert estimates(e) == before
        assert e.snapshot_loaded is not None and e.snapshot_loaded.status == "loaded"
        assert e.verify_audit().ok
        second = e.prune(T0 + timedelta(days=8))  # a second cut, after the first
        assert second.cut_seq > report.cut_seq and e.verify_audit().ok
        assert estimates(e) == before
    # The archive holds the chain up to the cut, whole (bodies with their decisions): it verifies.
    lines = [json.loads(x) for x in gzip.open(report.archive, "rt")]
    assert lines[0]["cut_seq"] == report.cut_seq and lines[0]["from_seq"] == 1
    events = [x["row"] for x in lines[1:] if x["table"] == "events"]
    prev = GENESIS
    for n, ev in enumerate(events, 1):
        assert ev["seq"] == n and ev["prev_hash"] == prev and link_hash(prev, ev["body"]) == ev["hash"]
        prev = ev["hash"]
    assert prev == report.cut_hash and len(events) == report.cut_seq
    assert {x["table"] for x in lines[1:]} >= {"events", "decisions", "outcomes"}


def test_tampering_after_a_prune_is_still_detected(store: tuple[Path, Clock]) -> None:
    db, clock = store
    with Engine(db, clock=clock) as e:
        cut = e.prune(T0 + timedelta(days=5)).cut_seq
    with sqlite3.connect(db) as conn:  # the first event kept, removed: it no longer links to the cut
        conn.execute("DELETE FROM events WHERE seq = ?", (cut + 1,))
    conn.close()
    with Engine(db, clock=clock) as e:
        report = e.verify_audit()
        assert not report.ok and report.first_broken_seq == cut + 1, report
    with sqlite3.connect(db) as conn:  # a cut moved to hide events would not link either
        conn.execute("UPDATE chain_cuts SET seq = seq + 1")
    conn.close()
    with Engine(db, clock=clock) as e:
        assert not e.verify_audit().ok


def test_prune_refuses_what_it_should_not_do(store: tuple[Path, Clock], tmp_path: Path) -> None:
    db, clock = store
    with Engine(db, clock=clock) as e:
        with pytest.raises(ValueError, match="at least the last day"):
            e.prune(clock.now - timedelta(hours=2))
        taken = tmp_path / "taken.jsonl.gz"
        taken.write_bytes(b"x")
        with pytest.raises(ValueError, match="never overwritten"):
            e.prune(T0 + timedelta(days=3), archive=taken)
        n, _ = leaving(db, T0 + timedelta(days=3))
        assert e.verify_audit().ok and e.prune(T0 + timedelta(days=3)).deleted["decisions"] == n
        n, _ = leaving(db, T0 + timedelta(days=4))
    result = run_cli(["--db", str(db), "store", "prune", "--before", "last tuesday"])
    assert result.returncode == 2 and "is not a date" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(["--db", str(db), "store", "prune", "--before", "2026-01-05", "--json"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"]["decisions"] == n > 0


def test_server_prunes_by_its_retention_setting(store: tuple[Path, Clock], tmp_path: Path) -> None:
    import time

    from app_support import InProcessApp

    from clearance.server.retention import RetentionSettings

    db, clock = store
    archives = tmp_path / "archives"
    n, _ = leaving(db, clock.now - timedelta(days=5))
    with Engine(db, clock=clock) as e:
        with InProcessApp(e, retention=RetentionSettings(days=5, archive_dir=str(archives))):
            deadline = time.monotonic() + 30
            while not list(archives.glob("*.jsonl.gz")) and time.monotonic() < deadline:
                time.sleep(0.02)
        assert e.verify_audit().ok
        with e.store.read() as tx:
            assert tx.chain_cut() is not None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 120 - n
    conn.close()
    with pytest.raises(ValueError, match="at least 1 day"):
        RetentionSettings.resolve(0.5)


def test_a_prune_with_an_anchor_key_leaves_a_signed_checkpoint(store: tuple[Path, Clock], tmp_path: Path) -> None:
    """The head after the cut (it holds the store.pruned event) is signed at once; an anchor of
    history kept after the cut still verifies; one of archived history says so instead of passing."""
    from clearance.engine import anchor

    db, clock = store
    private, public, _ = anchor.generate_keys(tmp_path / "keys" / "anchor.pem")
    key = anchor.load_private_key(private)
    with Engine(db, clock=clock, anchor_key=private) as e:
        with e.store.read() as tx:
            early = anchor.sign(key, 3, tx.event_at(3)["hash"], clock())  # an anchor of event 3, kept outside
        before = e.checkpoint_audit()  # and one of the head
        report = e.prune(T0 + timedelta(days=6))
        assert 3 < report.cut_seq < before.seq
        signed = e.audit_checkpoints(limit=1)[0]
        with e.store.read() as tx:
            assert signed.seq == tx.chain_head()[0] and tx.event_at(signed.seq)["type"] == "store.pruned"
        assert e.verify_audit().ok, e.verify_audit()
        for cp in (signed, before):
            (tmp_path / "a.json").write_text(cp.document())
            assert e.verify_anchor(tmp_path / "a.json", [public]).ok
        (tmp_path / "early.json").write_text(early.document())
        verdict = e.verify_anchor(tmp_path / "early.json", [public])
        assert not verdict.ok and "archived by a prune" in (verdict.problem or ""), verdict
