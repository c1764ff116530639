"""Benchmark: a flood of unauthenticated requests against decision latency and the audit trail.

Starts ``clearance serve`` on a fresh SQLite file and drives ``POST /v1/decisions`` at a steady
``--rate`` (open loop, as ``server.py`` does) for ``--seconds``, in alternating rounds: alone,
then with ``--flood`` unauthenticated requests sent at the same time from other connections
(guessed keys on the decision path and no key on a framework route, as a key-guessing client
would), from a process of its own; and, as a control, as many requests that need no key (a
``POST`` to ``/v1/health``, refused by the router). Prints each round, then one JSON line: the
median decision p99 alone, with the flood and with the control traffic, their ratios (target
<= 1.2), the flood's answers by status and the audit rows it added (target: a few).

    python benchmarks/auth_flood.py [--rounds 3] [--seconds 10] [--rate 200] [--flood 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import RULES, Conn, free_port, open_loop, start_server  # noqa: E402


async def flood(port: int, total: int, seconds: float, connections: int = 4, control: bool = False) -> Counter[int]:
    """``total`` unauthenticated requests spread evenly over ``seconds`` (``control``: as many
    that need no key, a ``POST`` to ``/v1/health`` that the router refuses: what any traffic at
    that rate costs this machine, to set the refusals' cost against)."""
    conns = [Conn(port, f"clr_guess{i}_{'x' * 32}" if i % 2 else "", False) for i in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    statuses: Counter[int] = Counter()
    per_conn = total // connections
    interval = seconds / max(per_conn, 1)

    async def worker(i: int, c: Conn) -> None:
        start = time.perf_counter()
        path = "/v1/health" if control else "/v1/decisions" if i % 2 else "/v1/outcomes/batch"
        for n in range(per_conn):
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            statuses[await c.post(path, b'{"tool": "refund_payment"}')] += 1

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    for c in conns:
        assert c.writer is not None
        c.writer.close()
    return statuses


def _flood_process(port: int, total: int, seconds: float, control: bool, out: Any) -> None:
    out.put(dict(asyncio.run(flood(port, total, seconds, control=control))))


async def round_(port: int, token: str, rate: float, seconds: float, flood_n: int,
                 control: bool = False) -> tuple[dict[str, float], Counter[int]]:  # fmt: skip
    """One round; the flood comes from a process of its own, so that the client timing the
    decisions is not slowed by it (only the server is, which is what is measured)."""
    if not flood_n:
        return await open_loop(port, token, True, rate, seconds, 16), Counter()
    out: Any = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_flood_process, args=(port, flood_n, seconds, control, out))
    proc.start()
    result = await open_loop(port, token, True, rate, seconds, 16)
    statuses = Counter(out.get(timeout=seconds + 60))
    proc.join(timeout=30)
    return result, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--flood", type=int, default=10_000)
    args = ap.parse_args()

    from clearance import Engine, parse_rules

    db = Path(tempfile.mkdtemp(prefix="clearance-flood-")) / "flood.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
        _, token = eng.keys.create("bench", "agent", identity="anonymous")
    port = free_port()
    proc = start_server(db, port, 1)
    p99: dict[str, list[float]] = {"quiet": [], "flood": [], "control": []}
    statuses: Counter[int] = Counter()
    rows_before = _refusal_rows(db)
    try:
        asyncio.run(round_(port, token, args.rate, 2.0, 0))  # warm up
        for r in range(args.rounds):
            for kind in ("quiet", "flood", "control"):
                n = 0 if kind == "quiet" else args.flood
                result, answered = asyncio.run(round_(port, token, args.rate, args.seconds, n, kind == "control"))
                p99[kind].append(result["p99_ms"])
                if kind == "flood":
                    statuses += answered
                print(f"round {r + 1} {kind}: p99 {result['p99_ms']:.1f} ms, p50 {result['p50_ms']:.1f} ms, "
                      f"errors {result['errors']}" + (f", flood answered {dict(answered)}" if n else ""), flush=True)  # fmt: skip
                if kind == "flood" and r + 1 < args.rounds:
                    time.sleep(61)  # the throttle's and the audit's windows close: each flood round starts afresh
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows_added = _refusal_rows(db) - rows_before  # after the server stopped: its held-back summaries are written
    quiet, flood_, control = (statistics.median(p99[k]) for k in ("quiet", "flood", "control"))
    print(json.dumps({"p99_ms_quiet": round(quiet, 2), "p99_ms_flood": round(flood_, 2),
                      "p99_ms_control": round(control, 2), "p99_ratio": round(flood_ / quiet, 3),
                      "p99_ratio_to_control": round(flood_ / control, 3), "flood_requests": args.flood,
                      "flood_statuses": {str(k): v for k, v in sorted(statuses.items())},
                      "audit_rows_per_flood": round(rows_added / args.rounds, 1), "rounds": args.rounds,
                      "rate": args.rate, "seconds": args.seconds}))  # fmt: skip


def _refusal_rows(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM events WHERE type = 'auth.refused'").fetchone()[0])


if __name__ == "__main__":
    main()
