"""Running a set of guards over a stream, shared by the tracks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.decision_quality.guards import make_guard
from benchmarks.decision_quality.sim import SimClock, run_stream


def run_guards(cfg: dict[str, Any], specs: list[dict[str, Any]], episodes: list, rules: Path, *,
               interval_minutes: float, label_noise: float) -> dict[str, dict[str, Any]]:  # fmt: skip
    """{guard name: {"records": per-episode records, "info": guard info}}."""
    out = {}
    for spec in specs:
        clock = SimClock()
        guard = make_guard(spec, cfg, rules, clock)
        try:
            recs = run_stream(guard, episodes, clock, interval=timedelta(minutes=interval_minutes),
                              reviewer=cfg["reviewer"], label_noise=label_noise, costs=cfg["costs"])  # fmt: skip
            out[spec["name"]] = {"records": recs, "info": guard.info()}
        finally:
            guard.close()
    return out


def scored_pairs(records: list[list[Any]]) -> list[tuple[float, bool]]:
    """(risk_score, truly harmful) for every decided call that carried a risk score."""
    return [(r.risk, r.harmful) for ep in records for r in ep if r.risk is not None]
