"""Latency of ``Engine.evaluate`` on the embedded SQLite store.

Target: p99 under 2 ms per decision, with every decision durably written before ``evaluate``
returns (the default store: WAL, ``synchronous=FULL``).

The script loads 20 realistic rules (selectors over nine tools, value caps, approval thresholds,
hourly and daily rate limits, cooldowns, all-day ``allowed_hours`` windows, deny lists, CEL
``when`` conditions and two shadow rules) into a fresh SQLite file in a temporary directory,
warms up, then times N calls over a rotating mix of actors, tools and values. It prints a
summary and ends with one line of JSON::

    python benchmarks/engine.py [--n 5000] [--seed 7] [--db PATH] [--profile] [--synchronous FULL]

Beside latency it reports the CPU time and the bytes written per decision (``/proc/self/io``),
which a loaded machine disturbs far less than it does latency.

For context it also times a disk floor: bare ``sqlite3`` commits of about 3 KB (WAL,
``synchronous=FULL``) in the same directory, with no clearance code at all. It is a lower
bound, not a like-for-like figure: one decision dirties about 12 pages (the decision, its
usage slots and audit event, their indexes, the chain head and the file header), the floor
about 4. Each commit appends its pages to the WAL, and the commit that takes the WAL past
the automatic checkpoint threshold also copies it back into the database file, with two more
fsyncs: the floor keeps SQLite's default of 1000 pages (one commit in about 250). The store
copies the WAL back from a background thread (``clearance.store.sqlite.checkpointer.Checkpointer``), so the
commit that reaches its threshold of 4000 pages (one decision in about 300) only copies the
last few dozen commits' pages before the WAL starts again. The summary counts those calls and
their latency, so that a p99 set by them would be visible, and what the checkpointer did.
``--synchronous NORMAL|OFF`` is a diagnostic that takes the fsync out of the measurement, to
show the engine's CPU share; it is not a supported configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from clearance import Engine, __version__, parse_rules

RULES = """
version: 1
rules:
  # -- email -------------------------------------------------------------------------------
  - id: email-hourly
    tool: send_email
    max_per_hour: 200
  - id: email-daily
    tool: send_email
    max_per_day: 1000
  - id: email-no-competitors
    tool: send_email
    when: args.to.endsWith("@competitor.example")
  - id: email-office-hours-shadow
    description: Trying out office hours for outbound mail before enforcing them.
    tool: send_email
    allowed_hours: {start: 8, end: 18, tz: Europe/Berlin, days: [mon, tue, wed, thu, fri]}
    status: shadow
  # -- research and files ------------------------------------------------------------------
  - id: search-hourly
    tool: search_web
    max_per_hour: 500
  - id: files-write-window
    tool: write_file
    allowed_hours: {start: 0, end: 24, tz: Europe/Berlin}
  - id: files-write-cooldown
    tool: write_file
    cooldown_seconds: 0.5
  # -- payments ------------------------------------------------------------------------------
  - id: payments-cap
    domain: payments
    tool: transfer_funds
    max_value: 50000
  - id: payments-approval
    domain: payments
    tool: transfer_funds
    require_approval_above: 5000
    approval_ttl: 4h
  - id: payments-hourly
    domain: payments
    tool: transfer_funds
    max_per_hour: 100
  - id: payments-daily
    domain: payments
    tool: transfer_funds
    max_per_day: 500
  - id: payments-budget-shadow
    domain: payments
    budget: 250000
    status: shadow
  - id: refunds
    domain: payments
    tool: refund_order
    require_approval_above: 500
    max_value: 10000
  - id: refunds-hourly
    domain: payments
    tool: refund_order
    max_per_hour: 50
  # -- support -------------------------------------------------------------------------------
  - id: tickets-hourly
    tool: create_ticket
    max_per_hour: 300
  - id: bulk-deletes
    tool: delete_record
    when: int(args.count) > 100
    effect: require_approval
  # -- data and ops --------------------------------------------------------------------------
  - id: sql-no-interns
    tool: run_sql
    deny_actors: ["intern-*"]
  - id: sql-no-drops
    tool: run_sql
    when: args.query.startsWith("DROP") || args.query.startsWith("TRUNCATE")
  - id: sql-daily
    tool: run_sql
    max_per_day: 1000
  - id: deploy-window
    tool: deploy_service
    allowed_hours: {start: "00:00", end: "24:00", tz: America/New_York}
"""

ACTORS = ["support-bot", "billing-agent", "research-agent", "ops-agent", "sales-bot", "finance-agent",
          "intern-42", "triage-bot", "writer-agent", "data-agent", "deploy-bot", "qa-agent"]  # fmt: skip


def make_action(i: int, rng: random.Random, actor_pool: list[str]) -> dict[str, Any]:
    actor = actor_pool[i % len(actor_pool)]
    kind = i % 9
    if kind == 0:
        to = rng.choice(["ana@customer.example", "ben@customer.example", "cy@competitor.example", "dee@partner.example"])
        return {"tool": "send_email", "domain": "comms", "actor": actor, "target": to,
                "arguments": {"to": to, "subject": f"Order {i}", "body": "Hello, your order has shipped."}}  # fmt: skip
    if kind == 1:
        return {"tool": "search_web", "domain": "research", "actor": actor,
                "arguments": {"query": f"supplier price list {i % 37}", "max_results": 10}}  # fmt: skip
    if kind == 2:
        path = f"/reports/{actor}/{i % 50}.md"
        return {"tool": "write_file", "domain": "files", "actor": actor, "target": path,
                "arguments": {"path": path, "content": "# weekly report\n" * 5}}  # fmt: skip
    if kind == 3:
        amount = round(rng.lognormvariate(7.0, 1.3), 2)  # mostly hundreds to a few thousand, a long tail
        return {"tool": "transfer_funds", "domain": "payments", "actor": actor, "value": amount, "target": f"acct-{i % 97}",
                "arguments": {"amount": amount, "currency": "EUR", "to_account": f"acct-{i % 97}"}}  # fmt: skip
    if kind == 4:
        amount = round(rng.uniform(5, 1500), 2)
        return {"tool": "refund_order", "domain": "payments", "actor": actor, "value": amount,
                "arguments": {"order_id": f"ord-{i}", "amount": amount, "reason": "damaged"}}  # fmt: skip
    if kind == 5:
        return {"tool": "create_ticket", "domain": "support", "actor": actor,
                "arguments": {"title": f"Customer {i % 211} cannot log in", "priority": rng.choice(["low", "high"])}}  # fmt: skip
    if kind == 6:
        count = rng.choice([1, 5, 20, 150, 1000])
        return {"tool": "delete_record", "domain": "crm", "actor": actor,
                "arguments": {"table": "contacts", "count": count, "filter": "stale = true"}}  # fmt: skip
    if kind == 7:
        query = rng.choice(["SELECT count(*) FROM orders", "SELECT * FROM users WHERE id = 7",
                            "DROP TABLE audit", "UPDATE orders SET status = 'shipped' WHERE id = 9"])  # fmt: skip
        return {"tool": "run_sql", "domain": "data", "actor": actor, "arguments": {"query": query}}
    env = rng.choice(["staging", "staging", "production"])
    return {"tool": "deploy_service", "domain": "ops", "actor": actor, "arguments": {"service": "api", "env": env}}


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_ms) - 1, int(round(q / 100 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def _written() -> int | None:
    """Bytes this process has handed to write() so far (Linux ``/proc/self/io`` wchar): the
    WAL frames of each commit and what the checkpointer copies back; None elsewhere."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
    except (OSError, StopIteration, ValueError):
        return None


def commit_floor(directory: Path, n: int = 1000) -> tuple[float, float]:
    """p50 and p99 (ms) of bare sqlite3 commits, WAL and synchronous=FULL, each a 2 KB row, a 1 KB
    row and an update: a lower bound for any durable commit on this disk."""
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS a (id INTEGER PRIMARY KEY, k TEXT, body TEXT)")
        conn.execute("CREATE INDEX IF NOT EXISTS a_k ON a (k)")
        conn.execute("CREATE TABLE IF NOT EXISTS h (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.execute("INSERT OR IGNORE INTO h VALUES (1, 0)")
        times = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO a (k, body) VALUES (?, ?)", (f"{i * 7919 % 1000:04d}", "d" * 2000))
            conn.execute("INSERT INTO a (k, body) VALUES (?, ?)", (f"{i * 104729 % 1000:04d}", "e" * 1000))
            conn.execute("UPDATE h SET n = n + 1 WHERE id = 1")
            conn.execute("COMMIT")
            times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        conn.close()
    times.sort()
    return percentile(times, 50), percentile(times, 99)


def run(n: int, seed: int, db: Path, profile: bool, synchronous: str = "FULL") -> dict[str, Any]:
    rng = random.Random(seed)
    engine = Engine(db)
    if synchronous != "FULL":  # diagnostic only: every new connection gets the weaker setting
        from sqlalchemy import event

        event.listen(engine.store.engine, "connect", lambda c, _r: c.execute(f"PRAGMA synchronous={synchronous}"))
        engine.store.engine.dispose()
    try:
        info = engine.apply_rules(parse_rules(RULES))
        assert len(engine.current_rules().rules) == 20
        warm = max(200, n // 20)
        for i in range(warm):
            engine.evaluate(make_action(i, rng, [f"warmup-{a}" for a in ACTORS]))

        actions = [make_action(i, rng, ACTORS) for i in range(n)]
        timings: list[float] = []
        results: Counter[str] = Counter()
        # A checkpoint ends with the WAL being restarted by the next commit, which rewrites the
        # WAL header's salt: reading it after each call tells which calls ran one.
        wal = os.open(f"{db}-wal", os.O_RDONLY)
        salt = os.pread(wal, 8, 16)
        checkpointed: list[int] = []
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        io0, cpu0, thread0 = _written(), time.process_time(), time.thread_time()
        started = time.perf_counter()
        for i, action in enumerate(actions):
            t0 = time.perf_counter_ns()
            decision = engine.evaluate(action)
            timings.append((time.perf_counter_ns() - t0) / 1e6)
            results[decision.result.value] += 1
            if (now_salt := os.pread(wal, 8, 16)) != salt:
                salt = now_salt
                if i > 0:
                    checkpointed.append(i - 1)
        wall = time.perf_counter() - started
        cpu, thread_cpu, io1 = time.process_time() - cpu0, time.thread_time() - thread0, _written()
        os.close(wal)
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
        with engine.store.engine.connect() as conn:
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        events = engine.verify_audit().events_checked
        ck = engine.store._checkpointer
        checkpointer = {"runs": ck.runs, "valves": ck.valves} if ck is not None else None
    finally:
        engine.close()
    floor_p50, floor_p99 = commit_floor(db.parent)

    ms = sorted(timings)
    ckpt_ms = sorted(timings[i] for i in checkpointed)
    others = sorted(t for i, t in enumerate(timings) if i not in set(checkpointed))
    return {
        "n": n,
        "warmup": warm,
        "rules": 20,
        "policy_version": info.version,
        "evaluate_p50_ms": round(percentile(ms, 50), 4),
        "evaluate_p90_ms": round(percentile(ms, 90), 4),
        "evaluate_p99_ms": round(percentile(ms, 99), 4),
        "evaluate_p999_ms": round(percentile(ms, 99.9), 4),
        "evaluate_max_ms": round(ms[-1], 4),
        "evaluate_mean_ms": round(statistics.fmean(ms), 4),
        "decisions_per_s": round(n / wall, 1),
        # CPU and bytes written survive a loaded machine better than latency does.
        "cpu_us_per_decision": round(cpu / n * 1e6, 1),
        "thread_cpu_us_per_decision": round(thread_cpu / n * 1e6, 1),
        "written_bytes_per_decision": round((io1 - io0) / n) if io0 is not None and io1 is not None else None,
        "wal_checkpoints": len(checkpointed),
        "checkpoint_call_p50_ms": round(percentile(ckpt_ms, 50), 4) if ckpt_ms else None,
        "evaluate_p99_ms_without_checkpoint_calls": round(percentile(others, 99), 4),
        "checkpointer": checkpointer,
        "results": dict(sorted(results.items())),
        "audit_events": events,
        "sqlite_synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
        "sqlite_journal_mode": journal,
        "sqlite_version": sqlite3.sqlite_version,
        "commit_floor_p50_ms": round(floor_p50, 4),
        "commit_floor_p99_ms": round(floor_p99, 4),
        "python": platform.python_version(),
        "clearance": __version__,
        "target_p99_ms": 2.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="timed evaluate calls (default 5000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", help="SQLite file to use (default: a fresh one in a temp dir)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the timed loop")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default="FULL",
                        help="diagnostic only: weaken SQLite's fsync to see the engine's CPU share")  # fmt: skip
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.db is not None and "://" in args.db:  # a URL is never turned into a file name
        parser.error("--db takes a SQLite file: this benchmark reads the WAL (benchmarks/server.py --db takes URLs)")
    if args.db is not None:
        args.db = Path(args.db)

    if args.db is not None:
        report = run(args.n, args.seed, args.db, args.profile, args.synchronous)
    else:
        with tempfile.TemporaryDirectory(prefix="clearance-bench-") as tmp:
            report = run(args.n, args.seed, Path(tmp) / "bench.db", args.profile, args.synchronous)

    verdict = "met" if report["evaluate_p99_ms"] < report["target_p99_ms"] else "MISSED"
    print(f"clearance {report['clearance']} evaluate benchmark: {report['n']} calls, {report['rules']} rules, "
          f"SQLite {report['sqlite_version']} journal={report['sqlite_journal_mode']} "
          f"synchronous={report['sqlite_synchronous']}")  # fmt: skip
    print(f"  p50 {report['evaluate_p50_ms']:.3f} ms   p90 {report['evaluate_p90_ms']:.3f} ms   "
          f"p99 {report['evaluate_p99_ms']:.3f} ms   p99.9 {report['evaluate_p999_ms']:.3f} ms   max {report['evaluate_max_ms']:.3f} ms   "
          f"mean {report['evaluate_mean_ms']:.3f} ms")  # fmt: skip
    print(f"  {report['decisions_per_s']:,.0f} decisions/s (one thread, each committed before evaluate returns)")
    written = report["written_bytes_per_decision"]
    print(f"  CPU {report['cpu_us_per_decision']:.0f} us per decision ({report['thread_cpu_us_per_decision']:.0f} us on the "
          f"deciding thread)" + (f"; {written:,} bytes written per decision" if written is not None else ""))  # fmt: skip
    if report["wal_checkpoints"]:
        print(f"  calls that checkpointed (and restarted the WAL): {report['wal_checkpoints']} "
              f"({100 * report['wal_checkpoints'] / report['n']:.1f}% of calls, p50 {report['checkpoint_call_p50_ms']:.3f} ms); "
              f"p99 of the other calls {report['evaluate_p99_ms_without_checkpoint_calls']:.3f} ms")  # fmt: skip
    if report["checkpointer"]:
        ck = report["checkpointer"]
        print(f"  background checkpointer: {ck['runs']} passive checkpoints, {ck['valves']} RESTART valves")
    print(f"  disk floor (bare sqlite3 3 KB commit, WAL, synchronous=FULL): p50 {report['commit_floor_p50_ms']:.3f} ms   "
          f"p99 {report['commit_floor_p99_ms']:.3f} ms")  # fmt: skip
    print("  results: " + ", ".join(f"{k} {v}" for k, v in report["results"].items()))
    print(f"  target p99 < {report['target_p99_ms']} ms: {verdict}")
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
