"""Benchmark: a flood of unauthenticated requests against decision latency and the audit trail.

Starts ``clearance serve`` on a fresh SQLite file and drives ``POST /v1/decisions`` at a steady
``--rate`` (open loop, as ``server.py`` does) for ``--seconds``, in alternating rounds: alone,
then with ``--flood`` unauthenticated requests sent evenly over the same seconds from other
connections (guessed keys on the decision path and no key on a framework route, as a
key-guessing client would), by ``wrk`` (``auth_flood.lua``); and, as a control, as many requests
that need no key (a ``POST`` to ``/v1/health``, refused by the router), by the same ``wrk``. The
decisions are the same ones at the same rate in every round; only the traffic beside them
differs. Prints each round, then one JSON line: the median decision p99 alone, with the flood
and with the control traffic, their ratios (target <= 1.2), the flood's answers by status and
the audit rows it added (target: a few).

    python benchmarks/auth_flood.py [--rounds 3] [--seconds 10] [--rate 200] [--flood 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import RULES, cpu_seconds, free_port, open_loop, start_server  # noqa: E402


WRK = shutil.which("wrk")
SCRIPT = Path(__file__).resolve().parent / "auth_flood.lua"
#: wrk's threads and connections: enough that the flood keeps its pace while answers are slow.
THREADS, CONNECTIONS = 2, 32


def flood_command(port: int, total: int, seconds: float, control: bool) -> list[str]:
    """``wrk`` sending ``total`` requests evenly over ``seconds`` (``control``: as many that need
    no key, a ``POST`` to ``/v1/health`` that the router refuses: what any traffic at that rate
    costs this machine, to set the refusals' cost against). wrk is C: the flood costs the two
    cores the server shares with the load generator far less than a Python client did."""
    per_thread = total // THREADS
    interval = max(0, int(CONNECTIONS * 1000 * seconds / total))  # milliseconds between one connection's requests
    return [WRK, "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds:.0f}s", "-s", str(SCRIPT),
            f"http://127.0.0.1:{port}", "--", "control" if control else "flood", str(per_thread), str(interval),
            f"{seconds:.0f}"]  # fmt: skip


def _statuses(output: str) -> Counter[int]:
    for line in output.splitlines():
        if line.startswith("statuses "):
            return Counter({int(code): int(n) for code, _, n in (p.partition(":") for p in line.split()[1].split(",") if p)})
    raise SystemExit(f"wrk gave no status counts:\n{output}")


async def round_(port: int, token: str, rate: float, seconds: float, flood_n: int,
                 control: bool = False) -> tuple[dict[str, float], Counter[int]]:  # fmt: skip
    """One round: the decisions from this process (open loop, the same in every kind of round),
    the flood from ``wrk`` at the same time."""
    if not flood_n:
        return await open_loop(port, token, True, rate, seconds, 16), Counter()
    proc = await asyncio.create_subprocess_exec(*flood_command(port, flood_n, seconds, control),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)  # fmt: skip
    result = await open_loop(port, token, True, rate, seconds, 16)
    out, _ = await proc.communicate()
    return result, _statuses(out.decode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--flood", type=int, default=10_000)
    args = ap.parse_args()
    if WRK is None:
        raise SystemExit("auth_flood.py sends the flood with wrk (apt install wrk); it is not on PATH")

    from clearance import Engine, parse_rules

    db = Path(tempfile.mkdtemp(prefix="clearance-flood-")) / "flood.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
        _, token = eng.keys.create("bench", "agent", identity="anonymous")
    port = free_port()
    proc = start_server(db, port, 1)
    p99: dict[str, list[float]] = {"quiet": [], "flood": [], "control": []}
    cpu: dict[str, list[float]] = {"quiet": [], "flood": [], "control": []}  # the server's CPU seconds a round
    statuses: Counter[int] = Counter()
    rows_before = _refusal_rows(db)
    try:
        asyncio.run(round_(port, token, args.rate, 2.0, 0))  # warm up
        for r in range(args.rounds):
            for kind in ("quiet", "flood", "control"):
                n = 0 if kind == "quiet" else args.flood
                cpu0 = cpu_seconds(proc.pid)
                result, answered = asyncio.run(round_(port, token, args.rate, args.seconds, n, kind == "control"))
                cpu[kind].append(cpu_seconds(proc.pid) - cpu0)
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
                      "flood_answered_per_round": round(sum(statuses.values()) / args.rounds),
                      "flood_statuses": {str(k): v for k, v in sorted(statuses.items())},
                      "audit_rows_per_flood": round(rows_added / args.rounds, 1), "rounds": args.rounds,
                      "rate": args.rate, "seconds": args.seconds, "flood_client": "wrk",
                      # What the extra traffic costs the server, whatever else runs on the machine:
                      # its CPU in a flood (or control) round beyond a quiet one, per request sent.
                      "server_cpu_s_per_round": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
                      "server_cpu_us_per_flood_request": round(extra(cpu, "flood", args.flood), 1),
                      "server_cpu_us_per_control_request": round(extra(cpu, "control", args.flood), 1)}))  # fmt: skip


def extra(cpu: dict[str, list[float]], kind: str, requests: int) -> float:
    """Microseconds of server CPU per request of ``kind`` beyond a quiet round (medians)."""
    return (statistics.median(cpu[kind]) - statistics.median(cpu["quiet"])) * 1e6 / requests


def _refusal_rows(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM events WHERE type = 'auth.refused'").fetchone()[0])


if __name__ == "__main__":
    main()
