"""Case memory: what similar past calls led to.

The engine asks memory for a :class:`RiskEstimate` before each decision. Memory does no I/O:
the engine feeds it the audit events it has not seen yet (:meth:`Memory.ingest`), in order, so
that a memory rebuilt from the store and one that lived through the same history agree, and
engines in several processes sharing one store all learn from every outcome.
:class:`~clearance.memory.cases.CaseMemory` is the default; :class:`NullMemory` judges by
rules alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from clearance.model import Action, Precedent

__all__ = ["Memory", "NullMemory", "RiskEstimate", "default_memory"]


@dataclass(frozen=True)
class RiskEstimate:
    """Probability that a call ends badly, and how much evidence it rests on."""

    risk: float = 0.0
    #: Summed weight of the precedents (similarity x recency x evidence strength): about the
    #: number of close, recent, reported precedents the estimate rests on.
    evidence: float = 0.0
    precedents: list[Precedent] = field(default_factory=list)
    summary: str = "no evidence from past cases"
    #: The tool has precedents, but none resembles this call.
    novel: bool = False
    #: ``risk`` times what is at stake (the call's value, or the cost of similar calls that went
    #: badly); None when neither is known.
    expected_cost: float | None = None
    #: The call's value (what its harm and its refusal are counted on).
    stake: float | None = None
    #: A cautious lower bound of ``risk`` (thin evidence: well below it). None: ``risk``.
    risk_lo: float | None = None
    #: Calls of this tool so far per unit of evidence behind the estimate: how many calls what
    #: is learnt about this one would inform (a kind of call that keeps coming while nothing
    #: is learnt about it is worth asking about).
    recurrence: float = 0.0
    #: Memory's estimates of how reliable a person's review is (None: it keeps none).
    reviewer_catch: float | None = None
    reviewer_false_reject: float | None = None
    #: The share of outcome reports taken to be wrong in this estimate.
    outcome_error_rate: float = 0.0


class Memory(Protocol):
    #: False: the engine neither feeds nor consults it (rules alone).
    learns: bool
    #: The ``seq`` of the last audit event ingested. A memory may also keep ``cursor_hash``,
    #: that event's hash: the engine then checks the store still has it before feeding more.
    cursor: int

    def ingest(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Learn from audit event rows (``seq``, ``type``, ``request_id``, ``body``, ``hash``) in order."""
        ...

    def reset(self) -> None:
        """Forget everything: the store's history changed under it (see ``cursor_hash``)."""
        ...

    def assess(
        self, action: Action, now: datetime, *, half_life_days: float = 90.0, prior: float | None = None,
        prior_strength: float = 2.0, outcome_error_rate: float | None = None,
    ) -> RiskEstimate: ...  # fmt: skip


class NullMemory:
    """Remembers nothing, so every call is judged by rules alone."""

    learns = False
    cursor = 0

    def ingest(self, events: Iterable[Mapping[str, Any]]) -> None:
        return None

    def reset(self) -> None:
        return None

    def assess(self, action: Action, now: datetime, **_: Any) -> RiskEstimate:
        return RiskEstimate()


def default_memory() -> Memory:
    """The memory an engine gets when none is given: learning from precedents, waiting for
    outcomes as ``CLEARANCE_MEMORY_MAX_WAITING`` and ``CLEARANCE_MEMORY_WAIT_DAYS`` say when set
    (so ``clearance serve`` and its workers are configured like the rest of the process)."""
    import os

    from clearance.memory.cases import MAX_WAITING, WAIT_DAYS, CaseMemory

    def setting(name: str, default: float, kind: type) -> Any:
        raw = os.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number") from None
        if not value > 0:  # (NaN too)
            raise ValueError(f"{name}={raw!r} must be above 0")
        return value

    return CaseMemory(max_waiting=setting("CLEARANCE_MEMORY_MAX_WAITING", MAX_WAITING, int),
                      wait_days=setting("CLEARANCE_MEMORY_WAIT_DAYS", WAIT_DAYS, float))  # fmt: skip
