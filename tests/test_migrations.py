"""Schema migrations: a fresh file reaches head, the result is exactly the declared schema,
reopening changes nothing, and the migration goes down and up again cleanly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from clearance import Engine
from clearance.store import GENESIS, migrate, open_store
from clearance.store.schema import metadata


def schema_diffs(store_engine) -> list:  # type: ignore[no-untyped-def]
    # compare_type is on: the UTCDateTime TypeDecorator is compared through its impl,
    # DateTime(timezone=True), which is what the migration creates, so it yields no diff.
    with store_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, metadata)


def schema_sql(store_engine) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with store_engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT name, sql FROM sqlite_master ORDER BY name"))]


def test_head_constant_matches_the_scripts() -> None:
    head = migrate.head_revision()
    assert head is not None
    if hasattr(migrate, "HEAD"):
        assert migrate.HEAD == head


def test_fresh_file_is_migrated_to_head_and_matches_the_metadata(tmp_path: Path) -> None:
    store = open_store(tmp_path / "fresh.db")
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert schema_diffs(store.engine) == []
        tables = set(inspect(store.engine).get_table_names())
        assert tables == set(metadata.tables) | {"alembic_version"}
        with store.read() as tx:
            assert tx.chain_head() == (0, GENESIS)
            assert tx.policy_head() == 0
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 4000
    finally:
        store.close()


def test_opening_twice_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "c.db"
    with Engine(db) as eng:
        rid = eng.evaluate({"tool": "t"}).request_id
        before = schema_sql(eng.store.engine)

    def refuse(*a: object, **kw: object) -> None:
        raise AssertionError("an up-to-date database was migrated again")

    monkeypatch.setattr(command, "upgrade", refuse)
    with Engine(db) as eng:
        assert schema_sql(eng.store.engine) == before
        assert eng.get_decision(rid).tool == "t"
        assert eng.verify_audit().ok and eng.verify_audit().events_checked == 1
    with Engine(db) as eng:
        assert migrate.current_revision(eng.store.engine) == migrate.head_revision()


def test_downgrade_to_base_then_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = open_store(db)
    try:
        cfg = migrate.alembic_config(store.engine)
        command.downgrade(cfg, "base")
        assert migrate.current_revision(store.engine) is None
        assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}

        command.upgrade(cfg, "head")
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert schema_diffs(store.engine) == []
        with store.read() as tx:
            assert tx.chain_head() == (0, GENESIS)
    finally:
        store.close()
    with Engine(db) as eng:  # and the store works on the re-created schema
        d = eng.evaluate({"tool": "t", "arguments": {"a": 1}})
        assert eng.get_decision(d.request_id) == d
        assert eng.verify_audit().ok


def test_a_database_at_base_is_upgraded_on_open(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = open_store(db)
    command.downgrade(migrate.alembic_config(store.engine), "base")
    store.close()
    with Engine(db) as eng:
        assert migrate.current_revision(eng.store.engine) == migrate.head_revision()
        assert eng.evaluate({"tool": "t"}).allowed


def test_first_open_from_many_processes(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    start = time.time() + 2.0  # processes import for a while; release them together
    code = (
        "import sys, time\n"
        "from clearance import Engine\n"
        f"time.sleep(max(0.0, {start!r} - time.time()))\n"
        "with Engine(sys.argv[1]) as e:\n"
        "    e.evaluate({'tool': 't'})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    failures = [err for p in procs for err in [p.communicate(timeout=120)[1]] if p.returncode != 0]
    assert failures == []
    with Engine(db) as eng:
        assert eng.verify_audit().ok and eng.verify_audit().events_checked == 4
        assert schema_diffs(eng.store.engine) == []


def test_lean_events_survive_a_downgrade_and_old_rows_stay_valid(tmp_path: Path) -> None:
    """0007 keeps a decision's JSON once (the decision.made event refers to its decisions row).
    Going back to 0006 puts it back into the events and kept answers; those full rows, read by
    the new code again after an upgrade, still verify and answer the same."""
    import sqlite3

    db = tmp_path / "lean.db"
    with Engine(db) as eng:
        d = eng.evaluate({"tool": "t", "arguments": {"a": 1}})
        eng.evaluate_serialised({"tool": "t"}, key=("k1", "idem-1", "f" * 64))  # an answer kept under a key
    with sqlite3.connect(db) as conn:
        lean = conn.execute("SELECT body, decision_at FROM events WHERE type = 'decision.made'").fetchall()
        assert lean and all(at is not None and '"result"' not in body for body, at in lean)
        assert conn.execute("SELECT body FROM idempotency_keys").fetchone()[0] is None
    conn.close()
    store = open_store(db)
    cfg = migrate.alembic_config(store.engine)
    command.downgrade(cfg, "0006")
    store.close()
    with sqlite3.connect(db) as conn:
        assert all('"result"' in body for (body,) in conn.execute("SELECT body FROM events WHERE type = 'decision.made'"))
        assert '"result"' in conn.execute("SELECT body FROM idempotency_keys").fetchone()[0]
    conn.close()
    with Engine(db) as eng:  # upgraded again on open: the full rows are read as they are
        assert eng.verify_audit().ok, eng.verify_audit()
        assert eng.get_decision(d.request_id) == d
        with eng.store.write() as tx:
            answer = tx.idempotent_answer("k1", "idem-1")
        assert answer is not None and '"result"' in (answer[3] or "")


def test_compact_rows_upgrade_a_store_with_data_and_old_rows_stay_valid(tmp_path: Path) -> None:
    """0008 keeps a decision's arguments once (the event refers to its decisions row), keeps a
    decision event's envelope only in its columns, and drops the unique index of event ids.
    A store at 0007 with data (made here by going down from head) is upgraded in place: its old
    full rows and the new lean ones verify together and read back exactly as they were."""
    import sqlite3

    db = tmp_path / "compact.db"
    with Engine(db) as eng:
        first = eng.evaluate({"tool": "t", "arguments": {"note": "kept once", "n": 1}})
        eng.evaluate_serialised({"tool": "t", "arguments": {"n": 2}}, key=("k1", "idem-1", "f" * 64))
        before = [e.model_dump() for e in eng.audit_events(limit=100)]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT body, arguments_at, source_version, request_id FROM events "
                            "WHERE type = 'decision.made'").fetchall()  # fmt: skip
        assert rows and all(at is not None and "kept once" not in body for body, at, _, _ in rows)
        assert all(source is not None and rid not in body for body, _, source, rid in rows)
    conn.close()

    store = open_store(db)
    command.downgrade(migrate.alembic_config(store.engine), "0007")
    store.close()
    with sqlite3.connect(db) as conn:  # 0007's layout: arguments in the bodies, event ids unique
        body = conn.execute("SELECT body FROM events WHERE request_id = ?", (first.request_id,)).fetchone()[0]
        assert "kept once" in body and body.startswith('{"created_at":') and first.request_id in body
        sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert "UNIQUE" in sql["events"] and "arguments_at" not in sql["events"]
    conn.close()

    with Engine(db) as eng:  # upgraded on open
        assert migrate.current_revision(eng.store.engine) == "0008" == migrate.HEAD
        assert schema_diffs(eng.store.engine) == []
        later = eng.evaluate({"tool": "t", "arguments": {"note": "after the upgrade"}})
        report = eng.verify_audit()
        assert report.ok and report.events_checked == len(before) + 1, report
        assert [e.model_dump() for e in eng.audit_events(limit=len(before))] == before
        assert eng.get_decision(first.request_id) == first and eng.get_decision(later.request_id) == later
        assert eng.get_action(later.request_id).arguments == {"note": "after the upgrade"}
        with eng.store.write() as tx:
            answer = tx.idempotent_answer("k1", "idem-1")
        assert answer is not None and answer[0] == "f" * 64 and '"result"' in (answer[3] or "")
    with sqlite3.connect(db) as conn:
        sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert "UNIQUE" not in sql["events"]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_events_request_id", "ix_events_trace_id", "ix_events_type", "ix_idempotency_keys_created_at"} <= indexes
        old = conn.execute("SELECT arguments_at FROM events WHERE request_id = ? AND type = 'decision.made'",
                           (first.request_id,)).fetchone()[0]  # fmt: skip
        new = conn.execute("SELECT body, arguments_at, source_version FROM events WHERE request_id = ? "
                           "AND type = 'decision.made'", (later.request_id,)).fetchone()  # fmt: skip
        assert old is None and new[1] is not None and "after the upgrade" not in new[0]
        assert new[2] is not None and later.request_id not in new[0]
    conn.close()


def test_compact_rows_upgrade_a_postgresql_store_with_data(pg_url: str) -> None:
    """The same upgrade on PostgreSQL (a column added and a constraint dropped in place): the
    rows written at 0007 and after 0008 verify together and read back as they were."""
    with Engine(pg_url) as eng:
        first = eng.evaluate({"tool": "t", "arguments": {"note": "kept once", "n": 1}})
        before = [e.model_dump() for e in eng.audit_events(limit=100)]
    store = open_store(pg_url)
    command.downgrade(migrate.alembic_config(store.engine), "0007")
    store.close()
    with Engine(pg_url) as eng:  # upgraded on open
        assert migrate.current_revision(eng.store.engine) == migrate.HEAD and schema_diffs(eng.store.engine) == []
        later = eng.evaluate({"tool": "t", "arguments": {"note": "after the upgrade"}})
        report = eng.verify_audit()
        assert report.ok and report.events_checked == len(before) + 1, report
        assert [e.model_dump() for e in eng.audit_events(limit=len(before))] == before
        assert eng.get_decision(first.request_id) == first and eng.get_decision(later.request_id) == later
        with eng.store.read() as tx:
            lean = tx.conn.execute(text("SELECT body, arguments_at, source_version FROM events WHERE request_id = :r "
                                        "AND type = 'decision.made'"), {"r": later.request_id}).one()  # fmt: skip
        assert lean[1] is not None and lean[2] is not None and "after the upgrade" not in lean[0]
