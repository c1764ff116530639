"""``verify_audit(request_id=...)``: one request's events checked for their place in the chain,
at a cost of a few reads an event (the dashboard's decision page), on every engine facade.

The store file is edited with plain sqlite3, as someone with access to it could."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from audit_support import forge_decision_and_rehash


def _three(engine: Any) -> list[str]:
    ids = []
    for amount in (10, 20, 30):
        d = engine.evaluate({"tool": "get_weather", "arguments": {"city": f"c{amount}"}, "actor": "a"})
        ids.append(d.request_id)
    return ids


def _seqs(engine: Any, request_id: str) -> list[int]:
    return [e.seq for e in engine.audit_events(request_id=request_id)]


def test_an_untouched_request_holds_its_place(engine: Any) -> None:
    ids = _three(engine)
    for rid in ids:
        report = engine.verify_audit(request_id=rid)
        assert report.ok and report.problem is None
        assert report.events_checked == len(_seqs(engine, rid)) >= 1
    whole = engine.verify_audit()
    assert whole.ok and whole.events_checked > engine.verify_audit(request_id=ids[0]).events_checked


def test_an_edited_event_breaks_its_request_and_not_its_neighbours(engine: Any, db_path: Path) -> None:
    first, middle, newest = _three(engine)
    seq = _seqs(engine, middle)[0]
    with sqlite3.connect(db_path) as conn:
        (body,) = conn.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
        conn.execute("UPDATE events SET body = ? WHERE seq = ?", (body.replace('"actor":"a"', '"actor":"z"'), seq))
    broken = engine.verify_audit(request_id=middle)
    assert not broken.ok and broken.first_broken_seq == seq and "altered" in (broken.problem or "")
    assert engine.verify_audit(request_id=first).ok and engine.verify_audit(request_id=newest).ok
    assert not engine.verify_audit().ok  # the whole chain still shows it


def test_a_rehashed_forgery_shows_in_the_link_to_the_next_event(engine: Any, db_path: Path) -> None:
    """A forger who recomputes the edited event's hash still breaks the next event's link, and
    the check of the edited request names it (it looks one event past its own)."""
    first, middle, _ = _three(engine)
    seq = _seqs(engine, first)[-1]
    with sqlite3.connect(db_path) as conn:
        forge_decision_and_rehash(conn, seq)
    report = engine.verify_audit(request_id=first)
    assert not report.ok and report.first_broken_seq == seq
    assert f"event {seq + 1} does not link to event {seq}" in (report.problem or "")
    assert not engine.verify_audit(request_id=middle).ok  # its first event no longer links back


def test_a_removed_newest_event_shows_in_the_request_before_it(engine: Any, db_path: Path) -> None:
    _, middle, newest = _three(engine)
    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM events WHERE request_id = ?", (newest,))
    gone = engine.verify_audit(request_id=newest)
    assert gone.ok and gone.events_checked == 0  # nothing of it is left to check here...
    report = engine.verify_audit(request_id=middle)  # ...but the request before it no longer reaches the head
    last = _seqs(engine, middle)[-1]
    assert not report.ok and report.first_broken_seq == last and f"event {last + 1} is missing" in (report.problem or "")
    assert not engine.verify_audit().ok
