"""Tampering with the store, as someone who can write the database file would: history
rewritten, reordered, forged and cut, first without and then with every hash and the head
recomputed (only a signed checkpoint kept outside the store can tell then), and state rows
edited alone. Every kind is tried on a fresh copy of one trail and must be detected: by
``verify_audit`` for the plain kinds and the row edits, by ``verify_anchor`` for the rest.

The kinds themselves are those of ``tests/test_audit.py`` and ``tests/test_anchor.py``; here they
run side by side on SQLite and PostgreSQL and are counted for the README's table.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from counts import Counts, scaled
from sqlalchemy import create_engine, text
from test_anchor import ROW_EDITS, anchored_trail
from test_anchor import TAMPERS as REHASHED
from test_audit import TAMPERS as UNHASHED
from test_audit import build_trail

from clearance import Engine
from clearance.engine import anchor

pytestmark = pytest.mark.reliability


def pristine(location: str, private: Path) -> tuple[dict[str, Any], anchor.Checkpoint]:
    """One trail of every operation and its signed checkpoint (``test_anchor.anchored_trail``)."""
    t, checkpoint = anchored_trail(location, private)
    with Engine(location) as eng:
        assert eng.verify_anchor(checkpoint, [private.with_name(private.name + ".pub")]).ok
    return t, checkpoint


def with_rows(location: str, t: dict[str, Any]) -> None:
    """What the row edits need besides: an API key and an active kill switch."""
    with Engine(location) as eng:
        t["key"] = eng.keys.create("bot", "agent")[0].key_id
        eng.activate_kill_switch(domain="payments", reason="incident", by="oncall")
        assert eng.verify_audit().ok


def kinds() -> list[tuple[str, str, Callable[..., None]]]:
    """``(kind, name, tamper)``: ``plain`` (sqlite3, hashes left as they are), ``rehashed``
    (history rewritten with every hash recomputed) and ``row`` (a state row edited alone)."""
    return ([("plain", f.__name__, f) for f in UNHASHED] + [("rehashed", f.__name__, f) for f, _ in REHASHED]
            + [("row", name, f) for name, f, _ in ROW_EDITS])  # fmt: skip


def detected(eng: Engine, kind: str, checkpoint: anchor.Checkpoint, public: Path) -> bool:
    report = eng.verify_anchor(checkpoint, [public]) if kind == "rehashed" else eng.verify_audit()
    return not report.ok and bool(report.problem)


def test_tampering_on_sqlite(tmp_path: Path, record: Counts) -> None:
    record.area, record.backend = "tampering", "SQLite"
    private, public, _ = anchor.generate_keys(tmp_path / "anchor.pem")
    bases = {"history": tmp_path / "history" / "trail.db", "rows": tmp_path / "rows" / "trail.db"}
    bases["history"].parent.mkdir()
    t, checkpoint = pristine(str(bases["history"]), private)
    shutil.copytree(bases["history"].parent, bases["rows"].parent)
    with_rows(str(bases["rows"]), t)
    missed = []
    for i, (kind, name, tamper) in enumerate(kinds()):
        copy = tmp_path / f"copy-{i}"
        shutil.copytree(bases["rows" if kind == "row" else "history"].parent, copy)  # the store and its redaction key
        db = copy / "trail.db"
        if kind == "plain":
            with sqlite3.connect(db) as conn:
                tamper(conn, t)
            conn.close()
            with Engine(db) as eng:
                seen = detected(eng, kind, checkpoint, public)
        else:
            with Engine(db) as eng:
                tamper(eng, t)
                seen = detected(eng, kind, checkpoint, public)
        record.add(tamperings_tried=1, tamperings_detected=seen)
        if not seen:
            missed.append(f"{kind}: {name}")
    assert not missed, missed


def test_tampering_on_postgresql(pg_url: str, tmp_path: Path, record: Counts) -> None:
    """The rewritten, reordered, forged and cut histories and the row edits (one at the default
    scale, all ten from scale 10: each copy of a database costs most of a second); each on a copy of the trail's
    database (``CREATE DATABASE ... TEMPLATE``)."""
    record.area, record.backend = "tampering", "PostgreSQL"
    private, public, _ = anchor.generate_keys(tmp_path / "anchor.pem")
    t, checkpoint = pristine(pg_url, private)
    server, history = pg_url.rsplit("/", 1)
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    rows = f"{history}_rows"
    missed = []
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{rows}" TEMPLATE "{history}"'))
        with_rows(f"{server}/{rows}", t)
        chosen = [k for k in kinds() if k[0] == "rehashed"] + [k for k in kinds() if k[0] == "row"][:scaled(1)]
        for i, (kind, name, tamper) in enumerate(chosen):
            copy = f"{history}_t{i}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{rows if kind == "row" else history}"'))
            try:
                with Engine(f"{server}/{copy}") as eng:
                    tamper(eng, t)
                    seen = detected(eng, kind, checkpoint, public)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)'))
            record.add(tamperings_tried=1, tamperings_detected=seen)
            if not seen:
                missed.append(f"{kind}: {name}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{rows}" WITH (FORCE)'))
        admin.dispose()
    assert not missed, missed
