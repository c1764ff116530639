"""Whether a decision costs the same in a big store as in an empty one (issue 21).

Stores of 0, 100,000 and 1,000,000 decisions are built once and cached: a third of the calls
with a reported outcome, and the last 20,000 of them refunds by one actor (``refund-bot``) that
wait for approval, unanswered, inside the rate-limit window of the refund rules. Memory is on
(its snapshot is saved with the store, so a rerun loads it instead of learning again). Then, in
a copy of each store (the cache stays as built), with the clock just after the build's:

- ``evaluate_p50_ms_at_N``: the rotating mix of ``benchmarks/engine.py`` (nine tools, twelve
  actors, 20 rules), ``Engine.evaluate`` durable (WAL, ``synchronous=FULL``), memory on;
- ``evaluate_p50_ms_pending_20k``: refunds by ``refund-bot`` in the largest store, each counted
  against its 20,000 pending approvals (``refunds_p50_ms_at_0``: the same calls in the empty
  store, its reference);

and their ratios to the empty store (``ratio_*``; target <= 1.3), with the CPU per decision
(``cpu_ms_*``, which a loaded machine disturbs less than wall time). It also times, in a fresh
process, opening an engine on a new store and its first two decisions (``start_*_ms``), and
the selection of rules for a tool none of 1,000 rules names (``unseen_tool_us_1000_rules``)::

    python benchmarks/scale.py [--sizes 0,100000,1000000] [--n 400] [--cache DIR] [--rounds 1]

Building goes through the engine itself (``evaluate`` and ``report_outcome``, so the rows are
the ones a deployment writes), many decisions per transaction that does not wait for the disk,
memory not consulted while building; memory then learns the whole log once and its snapshot is
saved. The clock is simulated (one call every 0.5 s of store time, the pending refunds in the
last 50 minutes), so a cached store means the same whenever it is measured. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine import ACTORS, RULES, make_action  # noqa: E402
from clearance import Engine, __version__, parse_rules  # noqa: E402
from clearance.memory import NullMemory  # noqa: E402

#: The engine benchmark's rules, with room in the refund rules for a backlog of pending
#: refunds (its refunds-hourly of 50 would block all but 50 of them).
SCALE_RULES = RULES.replace(
    "  - id: refunds-hourly\n    domain: payments\n    tool: refund_order\n    max_per_hour: 50\n",
    "  - id: refunds-hourly\n    domain: payments\n    tool: refund_order\n    max_per_hour: 100000\n"
    "  - id: refunds-daily\n    domain: payments\n    tool: refund_order\n    max_per_day: 200000\n"
    "  - id: refunds-budget\n    domain: payments\n    tool: refund_order\n    budget: 1000000000\n",
)
assert SCALE_RULES != RULES
PENDING = 20_000
PENDING_ACTOR = "refund-bot"
#: Store time at which every build ends; measuring starts here.
END = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
STEP = timedelta(seconds=0.5)
PENDING_STEP = timedelta(seconds=0.15)  # 20,000 in 50 minutes: all inside the hour


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rules():  # type: ignore[no-untyped-def]
    return parse_rules(SCALE_RULES, origin="benchmarks/scale.py")


def pending_refund(i: int, rng: random.Random) -> dict[str, Any]:
    amount = round(rng.uniform(600, 1500), 2)  # above the approval threshold of 500
    return {"tool": "refund_order", "domain": "payments", "actor": PENDING_ACTOR, "value": amount,
            "arguments": {"order_id": f"ord-p{i}", "amount": amount, "reason": "damaged"}}  # fmt: skip


def build(path: Path, n: int, seed: int = 21, chunk: int = 2000) -> float:
    """``n`` decisions ending at :data:`END`: the mix, a third with outcomes, then (if there is
    room) :data:`PENDING` refunds awaiting approval. Memory learns them all after; its snapshot
    is saved beside the store. Returns seconds taken."""
    started = time.perf_counter()
    tmp = path.with_name(path.name + ".building")
    for stale in tmp.parent.glob(tmp.name + "*"):
        stale.unlink()
    pending = PENDING if n >= PENDING else 0
    mixed = n - pending
    clock = Clock(END - STEP * mixed - PENDING_STEP * pending - timedelta(minutes=5))
    rng = random.Random(seed)
    with Engine(tmp, rules=rules(), memory=NullMemory(), clock=clock) as engine:
        for start in range(0, n, chunk):
            with engine.store.batch(sync=False):
                for i in range(start, min(n, start + chunk)):
                    if i < mixed:
                        clock.now += STEP
                        d = engine.evaluate(make_action(i, rng, ACTORS))
                        if i % 3 == 0 and d.allowed:
                            clock.now += timedelta(milliseconds=1)
                            bad = rng.random() < 0.1
                            engine.report_outcome(d.request_id, "harmful" if bad else "succeeded",
                                                  severity=0.8 if bad else 0.0, cost=300.0 if bad else 0.0)  # fmt: skip
                    else:
                        clock.now += PENDING_STEP
                        d = engine.evaluate(pending_refund(i, rng))
                        assert d.requires_approval, d.reason
            if start and start % 100_000 == 0:
                print(f"  built {start:,} of {n:,} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        engine.store.sync()
    with Engine(tmp, rules=rules(), clock=Clock(END)) as engine:  # memory learns the log once
        engine.warm_memory()
        engine.save_memory_snapshot()
    for part in tmp.parent.glob(tmp.name + "*"):
        part.rename(path.with_name(path.name + part.name[len(tmp.name):]))
    took = time.perf_counter() - started
    print(f"built {n:,} decisions in {took:.0f} s", file=sys.stderr)
    return took


def measure(path: Path | None, n_calls: int, work: Path) -> dict[str, Any]:
    """Time the mix and refund-bot's refunds in a copy of the store at ``path`` (None: empty)."""
    for old in work.glob("*"):
        old.unlink()
    copy = work / "store.db"
    if path is not None:
        for part in path.parent.glob(path.name + "*"):
            target = work / ("store.db" + part.name[len(path.name):])
            shutil.copyfile(part, target)
            with open(target, "rb+") as fh:  # on disk before timing: else the first commits' fsyncs flush the copy
                os.fsync(fh.fileno())
    clock = Clock(END)
    engine = Engine(copy, rules=rules(), clock=clock)
    try:
        engine.warm_memory()
        rng = random.Random(7)
        out: dict[str, Any] = {}
        for kind in ("mix", "refunds"):
            walls: list[float] = []
            cpu = 0.0
            for i in range(n_calls + 50):  # the first 50 warm up
                clock.now += timedelta(milliseconds=40)
                if kind == "mix":
                    action = make_action(i, rng, ACTORS)
                else:
                    amount = round(rng.uniform(5, 1500), 2)
                    action = {"tool": "refund_order", "domain": "payments", "actor": PENDING_ACTOR, "value": amount,
                              "arguments": {"order_id": f"ord-m{i}", "amount": amount, "reason": "late"}}  # fmt: skip
                c0, t0 = time.process_time(), time.perf_counter()
                engine.evaluate(action)
                t1, c1 = time.perf_counter(), time.process_time()
                if i >= 50:
                    walls.append((t1 - t0) * 1000)
                    cpu += c1 - c0
            out[kind] = {"p50": statistics.median(walls), "cpu_ms": cpu / n_calls * 1000}
        return out
    finally:
        engine.close()


def first_decision(work: Path) -> dict[str, float]:
    """In a fresh process: the engine opened on a new store (rules, memory on), then its first
    and second decisions timed (wall and CPU), as a server's or a script's first call pays."""
    code = (
        "import json, sys, time\n"
        "from benchmarks.scale import Clock, END, rules\n"
        "from benchmarks.engine import ACTORS, make_action\n"
        "import random\n"
        "from clearance import Engine\n"
        "t0 = time.perf_counter()\n"
        "engine = Engine(sys.argv[1], rules=rules(), clock=Clock(END))\n"
        "t1 = time.perf_counter()\n"
        "rng = random.Random(3)\n"
        "c1 = time.process_time()\n"
        "engine.evaluate(make_action(0, rng, ACTORS))\n"
        "t2, c2 = time.perf_counter(), time.process_time()\n"
        "engine.evaluate(make_action(1, rng, ACTORS))\n"
        "t3, c3 = time.perf_counter(), time.process_time()\n"
        "engine.close()\n"
        "print(json.dumps({'open_ms': (t1 - t0) * 1e3, 'first_ms': (t2 - t1) * 1e3, 'second_ms': (t3 - t2) * 1e3,\n"
        "                  'first_cpu_ms': (c2 - c1) * 1e3, 'second_cpu_ms': (c3 - c2) * 1e3}))\n"
    )
    for old in work.glob("*"):
        old.unlink()
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), root) if p))
    out = subprocess.run([sys.executable, "-c", code, str(work / "first.db")], check=True, capture_output=True, text=True,
                         env=env, cwd=root)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def unseen_tool_us(rounds: int = 5, calls: int = 2000) -> float:
    """CPU per rule selection for a tool the rule set has not seen, among 1,000 rules (990
    naming a tool each, 8 a domain, 2 with wildcards): the median of ``rounds``, in µs."""
    from clearance.policy import RuleFile
    from clearance.policy.rules import RuleSet

    listed = [{"id": f"t{i}", "tool": f"tool_{i}", "max_value": 10} for i in range(990)]
    listed += [{"id": f"d{i}", "domain": f"dom_{i}", "max_value": 10} for i in range(8)]
    listed += [{"id": "wild", "tool": "send_*", "max_value": 5}, {"id": "all", "max_value": 1e9}]
    rule_set = RuleSet.compile(RuleFile.model_validate({"version": 1, "rules": listed}), "1")
    times = []
    for r in range(rounds):
        c0 = time.process_time()
        for i in range(calls):
            rule_set.candidates("payments", f"unseen_{r}_{i}")
        times.append((time.process_time() - c0) / calls * 1e6)
    return statistics.median(times)


def label(n: int) -> str:
    return "0" if n == 0 else f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,100000,1000000", help="store sizes in decisions (0 first is the reference)")
    ap.add_argument("--n", type=int, default=400, help="calls timed per store and kind")
    ap.add_argument("--rounds", type=int, default=1, help="measure each store this many times (medians are printed)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clearance-bench-scale"))
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()} | {0})
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "scale", "version": __version__, "python": platform.python_version(),
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "load_average": round(os.getloadavg()[0], 2), "n": args.n}  # fmt: skip
    for n in sizes:
        path = cache / f"scale-{n}.db"
        if n and not path.exists():
            result[f"build_s_{label(n)}"] = round(build(path, n), 1)
    result["unseen_tool_us_1000_rules"] = round(unseen_tool_us(), 1)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    firsts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(dir=cache) as work:
        for _ in range(args.rounds):
            firsts.append(first_decision(Path(work)))
            for n in sizes:  # alternating sizes each round
                runs[n].append(measure(cache / f"scale-{n}.db" if n else None, args.n, Path(work)))
    for name in ("open_ms", "first_ms", "second_ms", "first_cpu_ms", "second_cpu_ms"):
        result[f"start_{name}"] = round(statistics.median(f[name] for f in firsts), 2)
    for n in sizes:
        mix = statistics.median(r["mix"]["p50"] for r in runs[n])
        result[f"evaluate_p50_ms_at_{label(n)}"] = round(mix, 3)
        result[f"cpu_ms_at_{label(n)}"] = round(statistics.median(r["mix"]["cpu_ms"] for r in runs[n]), 3)
        refunds = statistics.median(r["refunds"]["p50"] for r in runs[n])
        if n == 0:
            result["refunds_p50_ms_at_0"] = round(refunds, 3)
            result["refunds_cpu_ms_at_0"] = round(statistics.median(r["refunds"]["cpu_ms"] for r in runs[n]), 3)
    base = result["evaluate_p50_ms_at_0"]
    for n in sizes[1:]:
        result[f"ratio_{label(n)}"] = round(result[f"evaluate_p50_ms_at_{label(n)}"] / base, 3)
        result[f"cpu_ratio_{label(n)}"] = round(result[f"cpu_ms_at_{label(n)}"] / result["cpu_ms_at_0"], 3)
    largest = max(n for n in sizes)
    if largest >= PENDING:
        refunds = statistics.median(r["refunds"]["p50"] for r in runs[largest])
        result["evaluate_p50_ms_pending_20k"] = round(refunds, 3)
        result["ratio_pending_20k"] = round(refunds / result["refunds_p50_ms_at_0"], 3)
        cpu = statistics.median(r["refunds"]["cpu_ms"] for r in runs[largest])
        result["cpu_ms_pending_20k"] = round(cpu, 3)
        result["cpu_ratio_pending_20k"] = round(cpu / result["refunds_cpu_ms_at_0"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
