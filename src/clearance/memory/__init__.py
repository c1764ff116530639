"""Case memory: what similar past calls led to.

The engine asks memory for a :class:`RiskEstimate` before each decision and tells it about
every decision and outcome afterwards. This module defines that contract and the default,
which knows nothing; the learning issue supplies a memory that does. Memory does no I/O: the
engine feeds it from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from clearance.model import Action, Decision, Outcome, Precedent

__all__ = ["Memory", "NullMemory", "RiskEstimate"]


@dataclass(frozen=True)
class RiskEstimate:
    """Probability that a call ends badly, and how much evidence it rests on."""

    risk: float = 0.0
    evidence: float = 0.0
    precedents: list[Precedent] = field(default_factory=list)
    summary: str = "no evidence from past cases"


class Memory(Protocol):
    def assess(self, action: Action, now: datetime) -> RiskEstimate: ...

    def observe_decision(self, action: Action, decision: Decision) -> None: ...

    def observe_outcome(self, outcome: Outcome) -> None: ...


class NullMemory:
    """Remembers nothing, so every call is judged by rules alone."""

    def assess(self, action: Action, now: datetime) -> RiskEstimate:
        return RiskEstimate()

    def observe_decision(self, action: Action, decision: Decision) -> None:
        return None

    def observe_outcome(self, outcome: Outcome) -> None:
        return None
