"""How long a restart takes before the engine decides with memory: store open, memory's snapshot
loaded and checked against the audit chain, the events after it caught up.

Targets (issue 18): 2 s for a store of 100,000 decisions, 10 s for 1,000,000, a third of them
with reported outcomes. Before snapshots, memory was rebuilt from the whole log at every start
(17 s at 100,000 decisions); the script times that rebuild too, for comparison.

Stores are built once (decided through the engine, many decisions per transaction, memory not
consulted while building, which is what makes a million affordable) and cached under
``$TMPDIR/clearance-bench-restart``; a snapshot is saved, 1,000 more decisions are made after it
(so a restart also catches up), then each restart is timed in a fresh process (``--runs``
of them; wall and CPU time). A cached snapshot that this code no longer loads (another format
or version) is made again from a cold rebuild, followed by another 1,000 decisions::

    nice -n 10 python benchmarks/restart.py [--sizes 100000,1000000] [--cache DIR] [--runs 3] [--rebuild]

The last line printed is one JSON object: ``restart_s_100k``, ``restart_s_1m`` (medians, for
each size built), ``restart_cpu_s_...``, each run's time, and the cold rebuild times
``rebuild_s_...`` when one was made (always with ``--rebuild``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clearance import Engine, __version__
from clearance.memory import NullMemory

TOOLS = ["send_email", "pay", "refund", "delete_file", "get_balance", "post_message", "create_ticket", "transfer", "book"]


def action(rng: random.Random, i: int) -> dict[str, Any]:
    tool = rng.choice(TOOLS)
    who = f"user{rng.randrange(20_000)}@{rng.choice(['ex.com', 'corp.example', 'mail.test', 'odd.biz'])}"
    args: dict[str, Any] = {"to": who, "note": rng.choice(["monthly", "urgent", "refund for order", "hello"])}
    if tool in ("pay", "refund", "transfer"):
        args["iban"] = f"DE{rng.randrange(10**20):020d}"
    return {"tool": tool, "actor": f"agent-{rng.randrange(50)}", "domain": rng.choice(["shop", "ops", "finance"]),
            "value": round(rng.lognormvariate(4, 1.5), 2), "arguments": args}  # fmt: skip


def build(path: Path, n: int, seed: int = 7, chunk: int = 2000) -> None:
    """``n`` decisions, a third with an outcome, decided without memory (it is rebuilt later)."""
    rng = random.Random(seed)
    started = time.perf_counter()
    with Engine(path, memory=NullMemory()) as engine:
        for start in range(0, n, chunk):
            with engine.store.batch(sync=False):
                for i in range(start, min(n, start + chunk)):
                    d = engine.evaluate(action(rng, i))
                    if i % 3 == 0:
                        bad = rng.random() < 0.1
                        engine.report_outcome(d.request_id, "harmful" if bad else "succeeded", severity=0.8 if bad else 0.0,
                                              cost=rng.choice([0.0, 25.0, 300.0]) if bad else 0.0)  # fmt: skip
            if start and start % 100_000 == 0:
                print(f"  built {start:,} of {n:,} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        engine.store.sync()
    print(f"built {n:,} decisions in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def child(path: str, mode: str) -> None:
    """One restart, timed in this fresh process: open, warm, one decision."""
    started, cpu = time.perf_counter(), time.process_time()
    engine = Engine(path)
    if mode == "rebuild":
        engine.snapshots.enabled = False
    engine.warm_memory()
    ready, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.dry_run([action(random.Random(1), 0)])
    loaded = engine.snapshot_loaded.status if engine.snapshot_loaded else None
    if mode == "save":
        info = engine.save_memory_snapshot()
        print(json.dumps({"seconds": ready, "snapshot": info.as_dict()}))
    else:
        print(json.dumps({"seconds": ready, "cpu_seconds": cpu, "snapshot": loaded, "cursor": engine.memory.cursor}))
    engine.close()


def run_child(path: Path, mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", str(path), mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clearance-bench-restart"))
    ap.add_argument("--rebuild", action="store_true", help="also time a cold rebuild from the log")
    ap.add_argument("--runs", type=int, default=3, help="restarts timed per size (the median is reported)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "restart", "version": __version__, "python": platform.python_version(),
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip
    for n in (int(s) for s in args.sizes.split(",") if s):
        path = cache / f"store-{n}.db"
        if not path.exists():
            build(path, n)
        snap = Path(str(path) + ".memory.npz")
        warm = run_child(path, "load") if snap.exists() and not args.rebuild else {"snapshot": "none"}
        if warm["snapshot"] != "loaded":  # none yet, or of another format or version than this code's
            cold = run_child(path, "save")  # a cold rebuild, then the snapshot a server saves
            result[f"rebuild_s_{label(n)}"] = round(cold["seconds"], 2)
            result[f"snapshot_save_s_{label(n)}"] = cold["snapshot"]["seconds"]
            with Engine(path, memory=NullMemory()) as engine:  # decided after the snapshot: caught up at start
                rng = random.Random(n)
                with engine.store.batch(sync=False):
                    for i in range(1000):
                        engine.evaluate(action(rng, i))
        runs = [run_child(path, "load") for _ in range(args.runs)]
        assert all(r["snapshot"] == "loaded" for r in runs), runs
        result[f"restart_s_{label(n)}"] = round(statistics.median(r["seconds"] for r in runs), 2)
        result[f"restart_cpu_s_{label(n)}"] = round(statistics.median(r["cpu_seconds"] for r in runs), 2)
        result[f"restart_runs_s_{label(n)}"] = [round(r["seconds"], 2) for r in runs]
        result[f"snapshot_bytes_{label(n)}"] = snap.stat().st_size
        print(f"{n:,} decisions: restart {result[f'restart_s_{label(n)}']:.2f} s, median of {args.runs} (snapshot "
              f"loaded, caught up to event {runs[0]['cursor']})", file=sys.stderr)  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
