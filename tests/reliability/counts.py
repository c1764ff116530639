"""The counts each reliability test records, and the suite's scale (see conftest.py)."""

from __future__ import annotations

import os
from typing import Any

SCALE = float(os.environ.get("CLEARANCE_RELIABILITY_SCALE") or 1)

#: The counts a test may record; the table sums them.
FIELDS = ("runs", "kills", "acknowledged", "lost", "double_executions", "tamperings_tried", "tamperings_detected",
          "requests", "answers_5xx", "errors")  # fmt: skip


def scaled(n: float) -> int:
    """``n`` times the suite's scale, at least 1."""
    return max(1, round(n * SCALE))


class Counts:
    """What one test did: ``area`` and ``backend`` name its row in the table, the rest add up."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.area = ""
        self.backend = ""
        self.values: dict[str, float] = dict.fromkeys(FIELDS, 0)
        self.extra: dict[str, Any] = {}

    def add(self, **counts: float) -> None:
        for name, n in counts.items():
            if name not in self.values:
                raise KeyError(f"unknown reliability count {name!r} (one of {', '.join(FIELDS)})")
            self.values[name] += n

    def row(self, outcome: str, seconds: float) -> dict[str, Any]:
        return {"test": self.test, "area": self.area, "backend": self.backend, "outcome": outcome,
                "seconds": round(seconds, 2), **self.values, **self.extra}  # fmt: skip
