"""A forger of the lean store's decision events, for tests that check the chain catches one."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from clearance.engine import audit
from clearance.store.envelope import envelope

_COLUMNS = ("body", "prev_hash", "decision_at", "arguments_at", "source_version", "request_id", "event_id", "trace_id",
            "type", "created_at")  # fmt: skip


def forge_decision_and_rehash(conn: sqlite3.Connection, seq: int) -> None:
    """Turn the decision of the ``decision.made`` event ``seq`` from allowed to blocked in its
    decisions row, and give the event the hash of its body as it now reads (the lean store:
    the decision's JSON and arguments are the row's, spliced in at ``decision_at`` and then
    ``arguments_at``; the envelope is rebuilt from the event's columns)."""
    row = dict(zip(_COLUMNS, conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM events WHERE seq = ?", (seq,)).fetchone()),
               seq=seq)  # fmt: skip
    decision, arguments = conn.execute("SELECT decision, arguments FROM decisions WHERE request_id = ?",
                                       (row["request_id"],)).fetchone()  # fmt: skip
    forged = decision.replace('"result":"allowed"', '"result":"blocked"')
    at, args_at, body = row["decision_at"], row["arguments_at"], row["body"]
    assert forged != decision and at is not None and args_at is not None and row["source_version"] is not None
    conn.execute("UPDATE decisions SET decision = ? WHERE request_id = ?", (forged, row["request_id"]))
    whole = body[:at] + forged + body[at:]
    whole = whole[:args_at] + arguments + whole[args_at:]
    created = datetime.fromisoformat(row["created_at"]).replace(tzinfo=timezone.utc)
    before, after = envelope({**row, "created_at": created}, row["source_version"])
    conn.execute("UPDATE events SET hash = ? WHERE seq = ?", (audit.link_hash(row["prev_hash"], before + whole + after), seq))
