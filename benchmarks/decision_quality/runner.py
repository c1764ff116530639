"""Runs the configured tracks and guards, and writes ``report.json``, ``table.md`` and plots."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

from benchmarks.decision_quality.config import config_digest, guard_specs, load_config
from benchmarks.decision_quality.metrics import summarise

# metric -> lower is better? (for the table's reading aid only)
TABLE_METRICS = {
    "learning": [
        "loss_per_episode",
        "loss_curve_area",
        "harm_cost",
        "attack_success_rate",
        "benign_utility",
        "approvals_per_episode",
    ],
    "refund": [
        "loss_per_1000",
        "harm_cost_prevented",
        "benign_value_blocked",
        "approvals_per_1000",
        "loss_per_1000_after_change",
    ],
    "attacks": [
        "benign_utility",
        "utility_under_attack",
        "attack_success_rate",
        "benign_calls_allowed",
        "benign_calls_asked",
        "benign_calls_blocked",
        "approvals_per_task",
        "harmful_stopped_after_warmup",
        "benign_allowed_after_warmup",
    ],
    "calibration": ["brier", "ece", "auroc"],
}


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _summ(
    metrics: dict[str, dict[str, list[float]]], boot: dict[str, int]
) -> dict[str, Any]:
    return {g: {k: summarise(v, resamples=boot["resamples"], seed=boot["seed"]) for k, v in m.items()}
            for g, m in metrics.items()}  # fmt: skip


def run(
    cfg_or_path: str | Path | dict[str, Any],
    out: str | Path,
    *,
    plots: bool = True,
    log=print,
) -> dict[str, Any]:
    cfg = (
        load_config(cfg_or_path)
        if not (isinstance(cfg_or_path, dict) and "_base_dir" in cfg_or_path)
        else cfg_or_path
    )
    specs = guard_specs(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    boot = cfg["bootstrap"]
    report: dict[str, Any] = {
        "config_name": cfg["name"],
        "config_sha256": config_digest(cfg),
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
        "seeds": cfg["seeds"],
        "interval": "percentile bootstrap 95% over per-seed values",
        "python": platform.python_version(),
        "guards": {},
        "tracks": {},
    }
    cal_sources: dict[str, dict[str, list]] = {}
    tracks = cfg["tracks"]
    if "learning" in tracks or "calibration" in tracks:
        from benchmarks.decision_quality.tracks import learning

        log("track 2: learning curve")
        res = learning.run(cfg, specs, log)
        t: dict[str, Any] = {"settings": res["settings"], "regimes": {}}
        for regime, r in res["regimes"].items():
            report["guards"].update(r["guards"])
            curves = {g: {k: [sum(c[i] for c in v if not math.isnan(c[i])) / max(1, sum(1 for c in v if not math.isnan(c[i])))
                              for i in range(len(v[0]))] for k, v in cv.items()} for g, cv in r["curves"].items()}  # fmt: skip
            t["regimes"][regime] = {
                "metrics": _summ(r["metrics"], boot),
                "curves_mean_over_seeds": curves,
            }
            cal_sources[f"learning/{regime}"] = r["pairs"]
        if "learning" in tracks:
            report["tracks"]["learning"] = t
    if "refund" in tracks:
        from benchmarks.decision_quality.tracks import refund

        log("track 3: refund agent")
        res = refund.run(cfg, specs, log)
        report["guards"].update(res["guards"])
        report["tracks"]["refund"] = {
            "settings": res["settings"],
            "metrics": _summ(res["metrics"], boot),
        }
        cal_sources["refund"] = res["pairs"]
    if "attacks" in tracks:
        from benchmarks.decision_quality.tracks import attacks

        log("track 1: attacks and benign calls")
        res = attacks.run(cfg, specs, log)
        report["guards"].update(res["guards"])
        report["tracks"]["attacks"] = {"settings": res["settings"], "variants": {
            v: {"episodes": r["episodes"], "metrics": _summ(r["metrics"], boot)} for v, r in res["variants"].items()}}
    if "calibration" in tracks:
        from benchmarks.decision_quality.tracks import calibration

        log("track 4: calibration")
        cal = calibration.run(cal_sources)
        report["tracks"]["calibration"] = {src: {"metrics": _summ(c["metrics"], boot), "reliability": c["reliability"]}
                                           for src, c in cal.items()}  # fmt: skip
    report = _clean(report)
    (out / "report.json").write_text(
        json.dumps(report, indent=1, sort_keys=False, default=str)
    )
    table = render_table(report)
    (out / "table.md").write_text(table)
    if plots:
        try:
            from benchmarks.decision_quality.plots import write_plots

            report["plots"] = write_plots(report, out)
            (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        except ImportError as exc:  # matplotlib not installed
            log(f"plots skipped: {exc}")
    return report


def _fmt(s: dict[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    m, lo, hi = s["mean"], s["lo"], s["hi"]
    big = max(abs(m), abs(lo or 0), abs(hi or 0)) >= 100
    f = (lambda x: f"{x:,.0f}") if big else (lambda x: f"{x:.3f}")
    return f"{f(m)} [{f(lo)}, {f(hi)}]"


def _table(title: str, metrics: dict[str, dict[str, Any]], cols: list[str]) -> str:
    cols = [c for c in cols if any(c in m for m in metrics.values())]
    lines = [
        f"### {title}",
        "",
        "| guard | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for g, m in metrics.items():
        lines.append(f"| {g} | " + " | ".join(_fmt(m.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def render_table(report: dict[str, Any]) -> str:
    head = (f"Decision-quality benchmark, config `{report['config_name']}` (sha256 {report['config_sha256'][:12]}), "
            f"seeds {report['seeds']}; mean [95% bootstrap interval over seeds].\n")  # fmt: skip
    parts = [head]
    tr = report["tracks"]
    for regime, r in tr.get("learning", {}).get("regimes", {}).items():
        parts.append(
            _table(
                f"Track 2, learning curve, {regime} attackers",
                r["metrics"],
                TABLE_METRICS["learning"],
            )
        )
    if "refund" in tr:
        parts.append(
            _table(
                "Track 3, refund agent",
                tr["refund"]["metrics"],
                TABLE_METRICS["refund"],
            )
        )
    for variant, r in tr.get("attacks", {}).get("variants", {}).items():
        title = "all episodes in one stream" if variant == "normal" else "scored on injection tasks left out of training"
        parts.append(_table(f"Track 1, AgentDojo attacks and benign calls ({variant}: {title})", r["metrics"],
                            TABLE_METRICS["attacks"]))  # fmt: skip
    for src, c in tr.get("calibration", {}).items():
        parts.append(
            _table(
                f"Track 4, calibration of risk_score on {src}",
                c["metrics"],
                TABLE_METRICS["calibration"],
            )
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.decision_quality", description=__doc__
    )
    ap.add_argument(
        "--config",
        required=True,
        help="YAML config (see benchmarks/decision_quality/configs/dev.yaml)",
    )
    ap.add_argument(
        "--out", required=True, help="output folder: report.json, table.md, *.png"
    )
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    from benchmarks.decision_quality.data import DataMissing

    try:
        report = run(
            a.config,
            a.out,
            plots=not a.no_plots,
            log=lambda m: print(m, file=sys.stderr),
        )
    except DataMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_table(report))
    return 0
