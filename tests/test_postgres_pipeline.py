"""PostgreSQL's queued writes (``store.postgres.Pipeline``): a write transaction's statements
that nobody reads back travel with the next read, at the end of their operation, or with the
commit. What must hold: few round trips while the writer lock is held, statements run in the
order they were issued, an operation's failed write fails that operation alone, and nothing
queued outlives its transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import IntegrityError

from clearance import Engine, parse_rules
from clearance.model import DecisionResult

RULES = """
version: 1
rules:
  - id: search-rate
    tool: search
    max_per_hour: 1000
  - id: no-drops
    tool: drop_*
    effect: block
"""


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[Engine]:
    eng = Engine(pg_url)
    eng.apply_rules(parse_rules(RULES))
    yield eng
    eng.close()


def call(i: int) -> dict[str, Any]:
    return {"tool": ("search", "send_email", "drop_table")[i % 3], "actor": "a", "arguments": {"q": i}}


class RoundTrips:
    """What the process waits on the database for: each statement outside a pipeline, each
    pipeline, each commit the driver sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        execute, commit, pipeline = psycopg.Cursor.execute, psycopg.Connection.commit, psycopg.Connection.pipeline
        counter = self

        def counted_execute(cur: Any, *a: Any, **k: Any) -> Any:
            if cur.connection._pipeline is None:
                counter.n += 1
            return execute(cur, *a, **k)

        def counted_commit(conn: Any) -> Any:
            if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                counter.n += 1
            return commit(conn)

        @contextmanager
        def counted_pipeline(conn: Any, *a: Any, **k: Any) -> Iterator[Any]:
            outer = conn._pipeline is None
            with pipeline(conn, *a, **k) as p:
                yield p
            counter.n += outer

        monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
        monkeypatch.setattr(psycopg.Connection, "commit", counted_commit)
        monkeypatch.setattr(psycopg.Connection, "pipeline", counted_pipeline)


def test_a_batch_of_decisions_takes_about_three_round_trips_each(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = engine.store
    for i in range(3):  # statement caches warm
        engine.evaluate(call(i))
    trips = RoundTrips(monkeypatch)
    decisions = []
    with store.batch():
        for i in range(8):
            with store.write():  # as BatchWriter runs each operation
                decisions.append(engine.evaluate_serialised(call(i), key=("k", uuid.uuid4().hex, "fp"))[0])
    # Each decision: its idempotency lookup (with the savepoints and, first, the writer lock),
    # its usage and chain reads, its writes; then the batch's commit with its connection's ping.
    assert trips.n <= 8 * 3 + 3, trips.n
    assert [d.result for d in decisions[:3]] == [DecisionResult.allowed, DecisionResult.allowed, DecisionResult.blocked]
    assert engine.verify_audit().ok


def test_reads_in_a_write_see_its_queued_writes_in_order(engine: Engine) -> None:
    decision = engine.evaluate(call(1))
    store = engine.store
    with store.read() as tx:
        row = tx.get_decision(decision.request_id)
    assert row is not None
    copy = dict(row, request_id=f"req_{uuid.uuid4().hex}")
    with pytest.raises(RuntimeError), store.write() as tx:  # rolled back: a row made outside clearance
        tx.insert_decision(copy)  # queued
        assert tx.get_decision(copy["request_id"]) is not None  # through SQLAlchemy: sent first
        tx.keep_idempotent_answer("k", "seen", "fp", 200, "{}", row["decided_at"])  # queued
        assert tx.idempotent_answer("k", "seen") == ("fp", "done", 200, "{}")  # a hot read: sent with it
        raise RuntimeError("undo")
    with store.read() as tx:
        assert tx.get_decision(copy["request_id"]) is None
        assert tx.idempotent_answer("k", "seen") is None
    assert engine.verify_audit().ok


def test_an_operation_whose_queued_write_fails_fails_alone(engine: Engine) -> None:
    first = engine.evaluate(call(1))
    store = engine.store
    with store.read() as tx:
        row = tx.get_decision(first.request_id)
    assert row is not None
    made: list[str] = []
    with store.batch():
        with store.write():
            made.append(engine.evaluate(call(4)).request_id)
        with pytest.raises(IntegrityError):
            with store.write() as tx:
                tx.insert_decision(dict(row))  # a request_id already stored: fails when sent, in its operation
        with store.write():
            made.append(engine.evaluate(call(7)).request_id)
    with store.read() as tx:
        assert all(tx.get_decision(rid) is not None for rid in made)
    assert engine.verify_audit().ok


def test_nothing_queued_outlives_a_rolled_back_write(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_PG_POOL_SIZE", "1")  # one connection: the next write gets the same one
    monkeypatch.setenv("CLEARANCE_PG_MAX_OVERFLOW", "0")
    with Engine(pg_url) as eng:
        decision = eng.evaluate(call(1))
        with eng.store.read() as tx:
            row = tx.get_decision(decision.request_id)
        assert row is not None
        lost = dict(row, request_id=f"req_{uuid.uuid4().hex}")
        with pytest.raises(RuntimeError):
            with eng.store.write() as tx:
                tx.insert_decision(lost)  # queued, never sent
                raise RuntimeError("the caller gives up")
        eng.evaluate(call(2))
        with eng.store.read() as tx:
            assert tx.get_decision(lost["request_id"]) is None
        assert eng.verify_audit().ok
