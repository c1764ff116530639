"""Where a guard's loss comes from, per world: harm let through, good calls refused and review
cost, split by phase (before the slowest outcomes can have arrived, and after), by whether the
tool has side effects, and by call novelty (a counterparty no earlier call carried).

    python -m benchmarks.decision_quality.diagnose [--worlds w02,w06] [--seeds 1] [--guards clearance_learning,block_side_effects]

The last line is one JSON object: {world: {guard: breakdown}}.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import timedelta
from typing import Any

from benchmarks.decision_quality.config import guard_specs, load_config, resolve_path
from benchmarks.decision_quality.family import FAMILY_DIR
from benchmarks.decision_quality.features import identifiers, is_side_effect
from benchmarks.decision_quality.tracks.agentdojo import load_suites
from benchmarks.decision_quality.tracks.common import run_guards
from benchmarks.decision_quality.tracks.learning import episodes_for


def breakdown(cfg: dict[str, Any], eps: list, recs: list[list]) -> dict[str, dict[str, float]]:
    """Loss per episode, by (phase, side effect, novelty) and by component."""
    tcfg = cfg["learning"]
    costs = cfg["costs"]
    warm = timedelta(hours=tcfg["outcome_delay_hours"]["max"]) / timedelta(minutes=tcfg["call_interval_minutes"])
    seen: set = set()
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    n = 0
    for ep, rs in zip(eps, recs):
        for call, r in zip(ep.calls, rs):
            n += 1
            ids = identifiers(call.action.arguments, call.action.target)
            novel = bool(ids - seen)
            seen |= ids
            side = is_side_effect(call.action.tool, cfg["read_prefixes"])
            phase = "early" if n <= warm else "late"
            key = f"{phase}/{'side' if side else 'read'}/{'novel' if novel else 'known'}/{'bad' if r.harmful else 'good'}"
            d = out[key]
            d["calls"] += 1
            d["asked"] += r.asked
            d["blocked"] += r.result == "blocked"
            d["review"] += costs["approval"] * r.asked
            if r.ran and r.harmful:
                d["harm"] += r.harm_cost
            if not r.ran and not r.harmful:
                d["refused"] += costs["benign_blocked"] + costs["benign_value_blocked"] * r.benign_value
    e = len(eps)
    return {k: {kk: round(vv / (e if kk in ("harm", "refused", "review") else 1), 3) for kk, vv in v.items()}
            for k, v in sorted(out.items())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.decision_quality.diagnose", description=__doc__)
    ap.add_argument("--worlds", default="w02")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--guards", default="clearance_learning,block_side_effects,ask_side_effects")
    a = ap.parse_args(argv)
    result: dict[str, Any] = {}
    for w in a.worlds.split(","):
        cfg = load_config(FAMILY_DIR / f"{w}.yaml")
        specs = [s for s in guard_specs(cfg) if s["name"] in a.guards.split(",")]
        tcfg = cfg["learning"]
        suites = load_suites(cfg, tcfg["suites"], tcfg["version"])
        rules = resolve_path(cfg, tcfg["rules"])
        agg: dict[str, dict[str, dict[str, float]]] = {}
        for seed in cfg["seeds"][: a.seeds]:
            eps = episodes_for(cfg, tcfg, suites, seed, "novel")
            res = run_guards(cfg, specs, eps, rules, interval_minutes=tcfg["call_interval_minutes"],
                             label_noise=tcfg["label_noise"])  # fmt: skip
            for g, r in res.items():
                for k, d in breakdown(cfg, eps, r["records"]).items():
                    for kk, vv in d.items():
                        agg.setdefault(g, {}).setdefault(k, defaultdict(float))[kk] += vv / a.seeds
        result[w] = agg
        for g, rows in agg.items():
            tot = {c: round(sum(d.get(c, 0.0) for d in rows.values()), 2) for c in ("harm", "refused", "review")}
            print(f"{w} {g} total {tot} = {round(sum(tot.values()), 2)}", file=sys.stderr)
            for k, d in rows.items():
                print(f"   {k:28s} " + " ".join(f"{kk}={vv:.2f}" for kk, vv in d.items()), file=sys.stderr)
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
