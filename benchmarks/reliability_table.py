"""Run the reliability suite and write its counts into the README's "Reliability" table.

Runs ``pytest tests/reliability`` with ``CLEARANCE_RELIABILITY_OUT`` pointing at a JSON file
(each test writes its counts there: see tests/reliability/conftest.py), then replaces the lines
between ``<!-- reliability-table -->`` and ``<!-- /reliability-table -->`` in README.md with a
table of those counts, one row per kind of test and store. ``--scale`` sets
``CLEARANCE_RELIABILITY_SCALE`` (more kills, rounds, requests and seconds). The last line
printed is JSON: the totals.

    python benchmarks/reliability_table.py [--scale 1] [--from counts.json] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- reliability-table -->", "<!-- /reliability-table -->"

#: (count, column title); the table sums each over the tests of a row.
COLUMNS = [("runs", "runs"), ("kills", "SIGKILLs"), ("acknowledged", "acknowledged"), ("lost", "lost"),
           ("double_executions", "double executions"), ("tamperings", "tamperings detected"),
           ("requests", "requests"), ("answers_5xx", "5xx"), ("errors", "errors")]  # fmt: skip


def run_suite(out: Path, scale: float) -> int:
    env = dict(os.environ, CLEARANCE_RELIABILITY_OUT=str(out), CLEARANCE_RELIABILITY_SCALE=str(scale))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability"],
                          cwd=ROOT, env=env).returncode  # fmt: skip


def table(rows: list[dict[str, Any]], scale: float) -> tuple[str, dict[str, Any]]:
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        g = groups[r["area"], r["backend"]]
        for key in ("runs", "kills", "acknowledged", "lost", "double_executions", "tamperings_tried", "tamperings_detected",
                    "requests", "answers_5xx", "errors", "seconds"):  # fmt: skip
            g[key] += r.get(key, 0)
        g["tests"] += 1
        g["passed"] += r["outcome"] == "passed"
    lines = ["| what | store | " + " | ".join(title for _, title in COLUMNS) + " | tests passed |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 1)]  # fmt: skip
    for (area, backend), g in groups.items():
        cells = []
        for key, _ in COLUMNS:
            if key == "tamperings":
                cells.append(f"{g['tamperings_detected']:.0f} of {g['tamperings_tried']:.0f}" if g["tamperings_tried"] else "")
            else:
                cells.append(f"{g[key]:.0f}" if g[key] or key in ("lost", "double_executions", "answers_5xx", "errors") else "")
        lines.append(f"| {area} | {backend} | " + " | ".join(cells) + f" | {g['passed']:.0f} of {g['tests']:.0f} |")
    totals = {key: sum(g[key] for g in groups.values()) for key in ("runs", "kills", "acknowledged", "lost", "double_executions",
              "tamperings_tried", "tamperings_detected", "requests", "answers_5xx", "errors", "tests", "passed", "seconds")}  # fmt: skip
    totals = {k: round(v, 1) if k == "seconds" else int(v) for k, v in totals.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines.append("")
    for r in rows:
        if r.get("rss_growth_pct") is not None:
            lines.append(f"The short soak ({r['requests']:.0f} requests in {r['seconds']:.0f} s): p99 {r['p99_ms']:.0f} ms, "
                         f"server memory {r['rss_growth_pct']:+.1f} % from warm-up to the end.")
    lines.append(f"Scale {scale:g}, {totals['tests']} tests in {totals['seconds']:.0f} s, run on {when} at commit "
                 f"`{commit or 'unknown'}` (`python benchmarks/reliability_table.py` regenerates this table).")
    return "\n".join(lines), totals


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers to write the table between")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=float(os.environ.get("CLEARANCE_RELIABILITY_SCALE") or 1))
    ap.add_argument("--from", dest="source", type=Path, default=None, help="read these counts instead of running the suite")
    ap.add_argument("--no-readme", dest="readme", action="store_false", help="print the table, leave README.md alone")
    args = ap.parse_args()
    code = 0
    if args.source is None:
        out = Path(tempfile.mkdtemp(prefix="clearance-reliability-")) / "reliability.json"
        code = run_suite(out, args.scale)
        if not out.exists():
            raise SystemExit(f"the suite wrote no counts (pytest exited {code})")
    else:
        out = args.source
    text, totals = table(json.loads(out.read_text()), args.scale)
    print(text)
    if args.readme:
        write_readme(text)
    print(json.dumps({"scale": args.scale, "pytest_exit": code, **totals}))
    sys.exit(code)


if __name__ == "__main__":
    main()
