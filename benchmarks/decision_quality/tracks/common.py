"""Running a set of guards over a stream, shared by the tracks."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.decision_quality.guards import make_guard
from benchmarks.decision_quality.sim import SimClock, run_stream

#: A folder where the records of guards that do not learn through clearance's memory are kept
#: between runs (``DQ_RECORD_CACHE=/tmp/dq-cache``): developing the memory reruns only the
#: guards it changes. Keyed by everything a guard's records depend on that the harness knows
#: (its spec, the stream, the rules file, costs and reviewer), not by the harness's own code:
#: clear it after changing a baseline.
CACHE_ENV = "DQ_RECORD_CACHE"


def _cache_key(cfg: dict[str, Any], spec: dict[str, Any], episodes: list, rules: Path, interval_minutes: float,
               label_noise: float) -> str | None:  # fmt: skip
    if spec["kind"] == "clearance" and spec.get("learning"):
        return None  # what is under development: never cached
    h = hashlib.sha256()
    for part in (spec, cfg["costs"], cfg["reviewer"], cfg.get("read_prefixes"), cfg.get("tool_prior"), cfg.get("river"),
                 interval_minutes, label_noise):  # fmt: skip
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    for ep in episodes:
        h.update(b"\x00episode")
        for c in ep.calls:
            h.update(c.action.model_dump_json().encode())
            h.update(repr((c.harmful, c.harm_cost, c.benign_value, c.delay, c.role, c.u_review, c.u_noise, c.at)).encode())
    h.update(Path(rules).read_bytes())
    return h.hexdigest()


def run_guards(cfg: dict[str, Any], specs: list[dict[str, Any]], episodes: list, rules: Path, *,
               interval_minutes: float, label_noise: float) -> dict[str, dict[str, Any]]:  # fmt: skip
    """{guard name: {"records": per-episode records, "info": guard info}}."""
    out = {}
    cache = os.environ.get(CACHE_ENV)
    for spec in specs:
        path = None
        if cache:
            key = _cache_key(cfg, spec, episodes, rules, interval_minutes, label_noise)
            path = Path(cache) / f"{key}.pickle" if key else None
            if path is not None and path.exists():
                out[spec["name"]] = pickle.loads(path.read_bytes())
                continue
        clock = SimClock()
        guard = make_guard(spec, cfg, rules, clock)
        try:
            recs = run_stream(guard, episodes, clock, interval=timedelta(minutes=interval_minutes),
                              reviewer=cfg["reviewer"], label_noise=label_noise, costs=cfg["costs"])  # fmt: skip
            out[spec["name"]] = {"records": recs, "info": guard.info()}
        finally:
            guard.close()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(out[spec["name"]], protocol=4))
            tmp.replace(path)
    return out


def scored_pairs(records: list[list[Any]]) -> list[tuple[float, bool]]:
    """(risk_score, truly harmful) for every decided call that carried a risk score."""
    return [(r.risk, r.harmful) for ep in records for r in ep if r.risk is not None]
