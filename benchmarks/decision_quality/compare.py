"""clearance_learning's novel-regime loss per world of the family, this code against another
checkout's, on the same seeds (a paired comparison for memory work; the report with every guard
and its intervals is ``family run``).

    python -m benchmarks.decision_quality.compare --before /work/wt-base [--worlds w01,w02] [--seeds 2] [--jobs 2]

``--before`` is a checkout whose ``src`` holds the clearance to compare with; each side runs in
its own process. The last line is one JSON object: per world the two losses and their ratio,
and the geometric mean of the ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]

_ONE = """
import json, statistics, sys
from benchmarks.decision_quality.config import guard_specs, load_config, resolve_path
from benchmarks.decision_quality.family import FAMILY_DIR
from benchmarks.decision_quality.tracks.agentdojo import load_suites
from benchmarks.decision_quality.tracks.common import run_guards
from benchmarks.decision_quality.tracks.learning import _seed_metrics, episodes_for
w, seeds = sys.argv[1], int(sys.argv[2])
cfg = load_config(FAMILY_DIR / f"{w}.yaml"); t = cfg["learning"]
suites = load_suites(cfg, t["suites"], t["version"]); rules = resolve_path(cfg, t["rules"])
specs = [s for s in guard_specs(cfg) if s["name"] == "clearance_learning"]
losses = []
for seed in cfg["seeds"][:seeds]:
    eps = episodes_for(cfg, t, suites, seed, "novel")
    r = run_guards(cfg, specs, eps, rules, interval_minutes=t["call_interval_minutes"], label_noise=t["label_noise"])
    losses.append(_seed_metrics(eps, r["clearance_learning"]["records"])[0]["loss_per_episode"])
print(json.dumps(statistics.mean(losses)))
"""


def _loss(src: Path, world: str, seeds: int) -> float:
    env = {**os.environ, "PYTHONPATH": f"{src}:{HERE}"}
    out = subprocess.run([sys.executable, "-c", _ONE, world, str(seeds)], env=env, check=True, capture_output=True,
                         text=True, cwd=HERE)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.decision_quality.compare", description=__doc__)
    ap.add_argument("--before", required=True, type=Path)
    ap.add_argument("--worlds", default=",".join(f"w{k:02d}" for k in range(1, 21)))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    worlds = a.worlds.split(",")
    jobs = [(src, w) for w in worlds for src in (a.before / "src", HERE / "src")]
    with ThreadPoolExecutor(a.jobs) as ex:
        losses = list(ex.map(lambda j: _loss(j[0], j[1], a.seeds), jobs))
    result: dict[str, object] = {}
    for i, w in enumerate(worlds):
        before, after = losses[2 * i], losses[2 * i + 1]
        result[w] = {"before": round(before, 3), "after": round(after, 3), "ratio": round(after / before, 3)}
        print(f"{w}: {before:.2f} -> {after:.2f} ({after / before:.2f})", file=sys.stderr)
    result["geo_mean_ratio"] = round(statistics.geometric_mean([r["ratio"] for r in result.values()]), 3)  # type: ignore[index]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
