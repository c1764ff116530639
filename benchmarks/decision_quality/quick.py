"""One guard's figures on a config, without the other guards (a quick look while developing;
the report and the README tables come from the full harness).

    python -m benchmarks.decision_quality.quick --config benchmarks/decision_quality/configs/dev.yaml \\
        --tracks attacks [--guard clearance_learning] [--seeds 2]

The last line is one JSON object: {track/variant: {metric: mean over seeds}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.decision_quality.config import load_config
from benchmarks.decision_quality.runner import run


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m benchmarks.decision_quality.quick", description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--tracks", default="attacks")
    ap.add_argument("--guard", default="clearance_learning")
    ap.add_argument("--seeds", type=int)
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    cfg["tracks"] = a.tracks.split(",")
    cfg["guards"] = [g for g in cfg["guards"] if (g if isinstance(g, str) else g["name"]) == a.guard]
    if a.seeds:
        cfg["seeds"] = cfg["seeds"][: a.seeds]
    with tempfile.TemporaryDirectory() as out:
        report = run(cfg, Path(out), plots=False, log=lambda m: print(m, file=sys.stderr))
    flat: dict[str, dict[str, float]] = {}
    tr = report["tracks"]
    for v, r in tr.get("attacks", {}).get("variants", {}).items():
        flat[f"attacks/{v}"] = {k: s["mean"] for k, s in r["metrics"][a.guard].items()}
    for reg, r in tr.get("learning", {}).get("regimes", {}).items():
        flat[f"learning/{reg}"] = {k: s["mean"] for k, s in r["metrics"][a.guard].items()}
    if "refund" in tr:
        flat["refund"] = {k: s["mean"] for k, s in tr["refund"]["metrics"][a.guard].items()}
    print(json.dumps(flat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
