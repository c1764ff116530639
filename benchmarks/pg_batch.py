"""What a batch of decisions costs on PostgreSQL while it holds the writer lock.

Replicas on one PostgreSQL database take turns on the audit chain's head row: a write
transaction locks it with its first statement and holds it until its commit returns. So what
bounds N replicas together is the lock's hold time per decision, and what bounds one replica is
its CPU per decision. Both are measured here in-process, without HTTP, in figures that a loaded
machine moves less than decisions/s:

- ``lock_hold_ms_per_decision``: wall time of a batch (lock requested, decisions made, commit
  returned; uncontended), divided by its decisions;
- ``cpu_ms_per_decision``: this process's CPU per decision;
- ``round_trips_per_decision``: messages this process waited on the database for (each
  statement outside a pipeline, each pipeline, each commit), counted on psycopg.

The batches are made as the server's group commit makes them (``BatchWriter``): one
``store.batch()``, each decision a ``store.write()`` savepoint inside it, with an
Idempotency-Key like the server's, on the server benchmark's rules and calls.

    python benchmarks/pg_batch.py --db postgresql://postgres@127.0.0.1/DB [--batches 200] [--batch 8]

The database must exist and be empty (it is migrated here). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from server import RULES, body  # noqa: E402

from clearance import Engine, parse_rules  # noqa: E402


class RoundTrips:
    """Counts what this process waits on the database for, whatever the store's code does."""

    def __init__(self) -> None:
        self.n = 0
        self._in_pipeline = 0
        counter = self
        execute, executemany, commit, pipeline = (psycopg.Cursor.execute, psycopg.Cursor.executemany,
                                                  psycopg.Connection.commit, psycopg.Connection.pipeline)  # fmt: skip

        def counted_execute(cur: Any, *a: Any, **k: Any) -> Any:
            if not counter._in_pipeline and not cur.connection._pipeline:
                counter.n += 1
            return execute(cur, *a, **k)

        def counted_executemany(cur: Any, *a: Any, **k: Any) -> Any:
            if not counter._in_pipeline and not cur.connection._pipeline:
                counter.n += 1  # psycopg pipelines executemany by itself
            counter._in_pipeline += 1
            try:
                return executemany(cur, *a, **k)
            finally:
                counter._in_pipeline -= 1

        def counted_commit(conn: Any) -> Any:
            counter.n += 1
            return commit(conn)

        @contextmanager
        def counted_pipeline(conn: Any, *a: Any, **k: Any) -> Any:
            outer = conn._pipeline is None
            with pipeline(conn, *a, **k) as p:
                yield p
            if outer:
                counter.n += 1

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
        psycopg.Connection.commit = counted_commit  # type: ignore[method-assign]
        psycopg.Connection.pipeline = counted_pipeline  # type: ignore[method-assign,assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="postgresql://USER@HOST/DB (an empty database)")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8, help="decisions per batch (one transaction)")
    args = ap.parse_args()
    trips = RoundTrips()
    holds: list[float] = []
    with Engine(args.db) as engine:
        engine.apply_rules(parse_rules(RULES))
        store = engine.store
        i = 0

        def run_batch() -> None:
            nonlocal i
            with store.batch() as _tx:
                for _ in range(args.batch):
                    i += 1
                    action = json.loads(body(i))
                    with store.write():
                        engine.evaluate_serialised(action, key=("bench", uuid.uuid4().hex, "fp"))

        for _ in range(20):  # warm: statement caches, prepared statements, memory
            run_batch()
        n0, cpu0 = trips.n, time.process_time()
        for _ in range(args.batches):
            started = time.perf_counter()
            run_batch()
            holds.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu0
        decisions = args.batches * args.batch
        trips_per = (trips.n - n0) / decisions
    per = [h * 1000 / args.batch for h in holds]
    print(json.dumps({"lock_hold_ms_per_decision": round(statistics.median(per), 3),
                      "lock_hold_ms_per_decision_p90": round(sorted(per)[int(len(per) * 0.9)], 3),
                      "cpu_ms_per_decision": round(cpu * 1000 / decisions, 3),
                      "round_trips_per_decision": round(trips_per, 2), "batch": args.batch,
                      "decisions": decisions, "load_1min": round(os.getloadavg()[0], 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
