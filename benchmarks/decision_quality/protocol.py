"""The one small protocol every guard under test implements.

The harness drives guards through these two methods only. A guard sees what a
``clearance.Action`` carries (tool, arguments, actor, domain, value, target, context) and the
outcomes reported back to it: never task ids, labels or an attacker's goal text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from clearance import Action

RESULTS = ("allowed", "blocked", "requires_approval")


@dataclass(frozen=True)
class Verdict:
    result: str  # one of RESULTS
    risk_score: float | None
    request_id: str

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"unknown result {self.result!r}")
        if self.risk_score is not None and not 0.0 <= self.risk_score <= 1.0:
            raise ValueError(f"risk_score {self.risk_score} outside [0, 1]")


@runtime_checkable
class Guard(Protocol):
    name: str

    def evaluate(self, action: Action) -> Verdict: ...

    def report_outcome(
        self, request_id: str, harmful: bool, cost: float, at: datetime
    ) -> None: ...
