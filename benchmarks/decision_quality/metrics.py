"""Pure-Python metrics (no numpy): Brier score, expected calibration error, reliability data,
AUROC and percentile-bootstrap intervals. Tested on known inputs without the bench extra."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence


def brier(probs: Sequence[float], labels: Sequence[bool | int]) -> float:
    if not probs:
        return float("nan")
    return sum((p - float(y)) ** 2 for p, y in zip(probs, labels, strict=True)) / len(
        probs
    )


def reliability(
    probs: Sequence[float], labels: Sequence[bool | int], bins: int = 10
) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1]; the last bin includes 1.0. Empty bins are omitted."""
    acc: list[list[float]] = [[0, 0.0, 0.0] for _ in range(bins)]
    for p, y in zip(probs, labels, strict=True):
        b = min(int(p * bins), bins - 1)
        acc[b][0] += 1
        acc[b][1] += p
        acc[b][2] += float(y)
    out = []
    for i, (n, sp, sy) in enumerate(acc):
        if n:
            out.append(
                {
                    "lo": i / bins,
                    "hi": (i + 1) / bins,
                    "n": int(n),
                    "mean_risk": sp / n,
                    "harm_rate": sy / n,
                }
            )
    return out


def ece(probs: Sequence[float], labels: Sequence[bool | int], bins: int = 10) -> float:
    """Expected calibration error: sum over bins of n_b/N * |mean risk - harm rate|."""
    total = len(probs)
    if not total:
        return float("nan")
    return sum(
        r["n"] / total * abs(r["mean_risk"] - r["harm_rate"])
        for r in reliability(probs, labels, bins)
    )


def auroc(scores: Sequence[float], labels: Sequence[bool | int]) -> float:
    """Probability that a random harmful call scores above a random harmless one (ties count half)."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda t: t[0])
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2  # 1-based ranks i+1 .. j
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def bootstrap_ci(
    values: Sequence[float],
    *,
    resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    stat: Callable[[Sequence[float]], float] = mean,
) -> tuple[float, float, float]:
    """(statistic, lower, upper): percentile bootstrap of ``stat`` over ``values``."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        nan = float("nan")
        return nan, nan, nan
    point = stat(vals)
    rng = random.Random(seed)
    n = len(vals)
    boots = sorted(
        stat([vals[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples)
    )
    lo = boots[math.floor(alpha / 2 * (resamples - 1))]
    hi = boots[math.ceil((1 - alpha / 2) * (resamples - 1))]
    return point, lo, hi


def summarise(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> dict[str, object]:
    point, lo, hi = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"mean": point, "lo": lo, "hi": hi, "per_seed": list(values)}
