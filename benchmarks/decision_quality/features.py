"""Features of an Action, computed only from what the Action carries and from outcomes the guard
has been told about (never from labels it was not told)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from typing import Any

from clearance import Action
from clearance.memory.features import identifiers as _identifiers

def identifiers(arguments: dict[str, Any], target: str | None = None) -> set[tuple[str, str]]:
    """Identifier-like tokens of a call, as (kind, token): the engine's own featuriser
    (:func:`clearance.memory.features.identifiers`), so every guard and the world itself see
    the same counterparties, and none knows a fixed list of top-level domains."""
    return _identifiers(arguments, target)


def is_side_effect(tool: str, read_prefixes: list[str]) -> bool:
    return not any(tool.startswith(p) for p in read_prefixes)


def args_key(action: Action) -> str:
    return action.tool + "|" + json.dumps(action.arguments, sort_keys=True, default=str)


class Featuriser:
    """Stateful features: identifiers seen in calls reported harmless / harmful, and how a
    value compares with this tool's harmless history."""

    def __init__(self, read_prefixes: list[str]) -> None:
        self.read_prefixes = read_prefixes
        self.safe_ids: Counter[tuple[str, str]] = Counter()
        self.harm_ids: Counter[tuple[str, str]] = Counter()
        self.tool_logv: dict[str, list[float]] = defaultdict(
            lambda: [0.0, 0.0, 0.0]
        )  # n, sum, sumsq

    def features(self, action: Action) -> dict[str, float]:
        ids = identifiers(action.arguments)
        novel = [i for i in ids if i not in self.safe_ids]
        logv = math.log1p(max(action.value or 0.0, 0.0))
        n, s, ss = self.tool_logv[action.tool]
        z = 0.0
        if n >= 3:
            m = s / n
            sd = math.sqrt(max(ss / n - m * m, 1e-6))
            z = max(min((logv - m) / sd, 5.0), -5.0)
        f = {
            f"tool={action.tool}": 1.0,
            f"domain={action.domain}": 1.0,
            "side_effect": float(is_side_effect(action.tool, self.read_prefixes)),
            "log_value": logv / 10.0,
            "value_z": z / 5.0,
            "n_ids": min(len(ids), 5) / 5.0,
            "n_novel_ids": min(len(novel), 5) / 5.0,
            "any_novel_id": float(bool(novel)),
            "any_harm_id": float(any(i in self.harm_ids for i in ids)),
        }
        for kind in {k for k, _ in novel}:
            f[f"novel_{kind}"] = 1.0
        return f

    def observe(self, action: Action, harmful: bool) -> None:
        ids = identifiers(action.arguments)
        if harmful:
            self.harm_ids.update(ids)
        else:
            self.safe_ids.update(ids)
            if action.value is not None:
                acc = self.tool_logv[action.tool]
                lv = math.log1p(max(action.value, 0.0))
                acc[0] += 1
                acc[1] += lv
                acc[2] += lv * lv
