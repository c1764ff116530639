"""Track 4: calibration of ``risk_score`` on the calls of tracks 2 and 3 (every decided call
with a score, against its true label): Brier score, ECE, reliability data and AUROC per seed."""

from __future__ import annotations

from typing import Any

from benchmarks.decision_quality.metrics import auroc, brier, ece, reliability


def from_pairs(
    pairs_by_guard: dict[str, list[list[tuple[float, bool]]]], bins: int = 10
) -> dict[str, Any]:
    metrics: dict[str, dict[str, list[float]]] = {}
    rel: dict[str, list[dict[str, float]]] = {}
    for g, per_seed in pairs_by_guard.items():
        if not any(per_seed):
            continue
        for pairs in per_seed:
            p = [x for x, _ in pairs]
            y = [int(h) for _, h in pairs]
            m = metrics.setdefault(g, {})
            m.setdefault("brier", []).append(brier(p, y))
            m.setdefault("ece", []).append(ece(p, y, bins))
            m.setdefault("auroc", []).append(auroc(p, y))
            m.setdefault("base_rate", []).append(sum(y) / len(y) if y else float("nan"))
        allp = [x for pairs in per_seed for x, _ in pairs]
        ally = [int(h) for pairs in per_seed for _, h in pairs]
        rel[g] = reliability(allp, ally, bins)
    return {"metrics": metrics, "reliability": rel}


def run(sources: dict[str, dict[str, list]], bins: int = 10) -> dict[str, Any]:
    """``sources``: {"learning/novel": pairs by guard, "refund": pairs by guard, ...}."""
    return {name: from_pairs(p, bins) for name, p in sources.items()}
