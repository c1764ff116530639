"""The one small protocol every guard under test implements.

The harness drives guards through these two methods only. A guard sees what a
``clearance.Action`` carries (tool, arguments, actor, domain, value, target, context) and what
is reported back to it: never task ids, labels or an attacker's goal text.

Two things are reported back, as they would be in a deployment: the outcome of a call that ran,
after its delay (possibly mislabelled), and a person's answer to a call sent for approval, at
once (``reviewed=True``): ``harmful=True`` for a rejection (the call never ran; cost 0),
``harmful=False`` for an approval (the call ran, and its own outcome follows later). The answer
is the reviewer's judgement, not the truth: reviewers miss some attacks and refuse some
harmless calls. Blocked calls report nothing.
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
        self, request_id: str, harmful: bool, cost: float, at: datetime, *, reviewed: bool = False
    ) -> None: ...
