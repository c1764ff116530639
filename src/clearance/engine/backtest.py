"""Backtest: what a candidate rules file would have done to the recorded traffic.

Each recorded decision is judged again, oldest first, by the engine's own evaluation
(:meth:`Engine._judge`, the path of ``evaluate`` and ``dry_run``), against a scratch copy of the
counters that the replay itself fills in time order, so rate limits, budgets and cooldowns
behave as they would have under the candidate. Nothing is written to the store. The verdicts
are compared with the recorded ones, and the changed calls are joined with their recorded
outcomes: harm and cost a stricter rule would have avoided, successful calls it would have
stopped, the approval load it would have added, per rule.

Held fixed, since they are not the rules' doing: a call blocked by a kill switch stays blocked;
where memory's risk tightened a recorded verdict, it tightens the candidate's the same way.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from clearance.model import SEVERITY, Action, DecisionResult, OutcomeStatus, RuleMatch
from clearance.policy import RuleFile, RuleSet
from clearance.store.history import count_decisions, iter_decisions, iter_outcomes

if TYPE_CHECKING:
    from clearance.engine.core import Engine

__all__ = ["BacktestReport", "ChangedCall", "OutcomeTally", "RuleImpact", "ScratchUsage", "backtest"]

#: Outcomes that count as a call having gone wrong.
BAD = frozenset({OutcomeStatus.failed.value, OutcomeStatus.reverted.value, OutcomeStatus.harmful.value})
#: How often (in decisions) the progress callback is told.
PROGRESS_EVERY = 1000

_ALLOWED, _ASK, _BLOCKED = DecisionResult.allowed, DecisionResult.requires_approval, DecisionResult.blocked
_KIND = {_BLOCKED: "newly_blocked", _ASK: "newly_asking", _ALLOWED: "newly_allowed"}


class OutcomeTally(BaseModel):
    """Calls and what their recorded outcomes say."""

    calls: int = 0
    harmful: int = Field(default=0, description="Calls with a harmful outcome.")
    bad: int = Field(default=0, description="Calls with a failed, reverted or harmful outcome.")
    succeeded: int = Field(default=0, description="Calls whose outcomes all say succeeded.")
    no_outcome: int = Field(default=0, description="Calls with no outcome reported.")
    cost: float = Field(default=0.0, description="The cost of all their outcomes.")

    def add(self, outcomes: list[tuple[str, float]]) -> None:
        self.calls += 1
        statuses = {s for s, _ in outcomes}
        if not outcomes:
            self.no_outcome += 1
        elif statuses & BAD:
            self.bad += 1
            self.harmful += OutcomeStatus.harmful.value in statuses
        else:
            self.succeeded += 1
        self.cost += sum(c for _, c in outcomes)


class RuleImpact(BaseModel):
    """One candidate rule's part in the changes (a changed call counts for every rule that made it)."""

    rule_id: str
    status: str
    fired: int = Field(default=0, description="Calls it fired on (shadow rules: would have fired).")
    newly_blocked: OutcomeTally = Field(default_factory=OutcomeTally)
    newly_asking: OutcomeTally = Field(default_factory=OutcomeTally)


class ChangedCall(BaseModel):
    request_id: str
    tool: str
    actor: str
    decided_at: datetime
    recorded: DecisionResult
    candidate: DecisionResult
    reason: str
    outcome: str | None = Field(default=None, description="The worst recorded outcome, if any.")
    cost: float = 0.0


class BacktestReport(BaseModel):
    """What the candidate rules would have changed in ``[since, until)``."""

    since: datetime | None
    until: datetime
    decisions: int = Field(description="Recorded decisions replayed.")
    changed: int
    transitions: dict[str, int] = Field(default_factory=dict, description="'recorded->candidate': calls.")
    newly_blocked: OutcomeTally = Field(default_factory=OutcomeTally)
    newly_asking: OutcomeTally = Field(default_factory=OutcomeTally)
    newly_allowed: OutcomeTally = Field(default_factory=OutcomeTally)
    harm_avoided: int = Field(default=0, description="Harmful calls the candidate would have blocked.")
    cost_avoided: float = Field(default=0.0, description="The outcome cost of the calls it would have blocked.")
    successful_stopped: int = Field(default=0, description="Calls that succeeded and it would have blocked.")
    approval_load_added: int = Field(default=0, description="Approvals asked under the candidate minus those recorded.")
    rules: list[RuleImpact] = Field(default_factory=list)
    examples: list[ChangedCall] = Field(default_factory=list, description="The first changed calls.")


class ScratchUsage:
    """The counters of a replay (:class:`clearance.policy.Usage`), kept in memory and filled in
    time order: the same questions the store's ``usage`` table answers (slots after ``since``,
    their total value, a target's last slot), for calls that are replayed oldest first."""

    __slots__ = ("_ats", "_last", "_sums")

    def __init__(self) -> None:
        self._ats: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        self._sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0])  # prefix sums of value
        self._last: dict[tuple[str, str, str], datetime] = {}

    def hold(self, rule_id: str, actor: str, target: str | None, value: float | None, at: datetime) -> None:
        key = (rule_id, actor)
        self._ats[key].append(at)
        sums = self._sums[key]
        sums.append(sums[-1] + (value or 0.0))
        self._last[(rule_id, actor, target or "")] = at

    def count(self, rule_id: str, actor: str, since: datetime, cap: int | None = None) -> int:
        ats = self._ats.get((rule_id, actor))
        n = len(ats) - bisect.bisect_right(ats, since) if ats else 0
        return n if cap is None else min(n, cap)

    def total_value(self, rule_id: str, actor: str, since: datetime) -> float:
        ats = self._ats.get((rule_id, actor))
        if not ats:
            return 0.0
        sums = self._sums[(rule_id, actor)]
        return sums[-1] - sums[bisect.bisect_right(ats, since)]

    def last_at(self, rule_id: str, actor: str, target: str | None) -> datetime | None:
        return self._last.get((rule_id, actor, target or ""))


def _kill_switched(decision: Mapping[str, Any]) -> bool:
    """A recorded block that no rule and no risk made: a kill switch's."""
    return (decision.get("result") == "blocked" and decision.get("rules_result") in (None, "blocked")
            and not decision.get("matched_rules"))  # fmt: skip


def _worst(outcomes: list[tuple[str, float]]) -> str | None:
    order = ("harmful", "reverted", "failed", "succeeded")
    found = {s for s, _ in outcomes}
    return next((s for s in order if s in found), None)


def backtest(engine: Engine, rules: RuleFile, *, since: datetime | None = None, until: datetime | None = None,
             progress: Callable[[int, int], None] | None = None, examples: int = 20) -> BacktestReport:  # fmt: skip
    """Replay the decisions of ``[since, until)`` under ``rules``; see the module's docstring.

    ``progress(done, total)`` is called every :data:`PROGRESS_EVERY` decisions and at the end."""
    ruleset = RuleSet.compile(rules, "backtest")
    until = until or engine.clock()
    report = BacktestReport(since=since, until=until, decisions=0, changed=0,
                            rules=[RuleImpact(rule_id=r.id, status=r.rule.status) for r in ruleset.rules])  # fmt: skip
    impact = {r.rule_id: r for r in report.rules}
    usage = ScratchUsage()
    transitions: dict[str, int] = defaultdict(int)
    with engine.store.read() as tx:
        total = count_decisions(tx, since, until)
        outcomes: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for o in iter_outcomes(tx, since, until):
            outcomes[o["request_id"]].append((o["status"], float(o["cost"])))
        recorded_asks = candidate_asks = 0
        for n, row in enumerate(iter_decisions(tx, since, until), 1):
            decision = row["decision"]
            recorded = DecisionResult(row["result"])
            now = row["decided_at"]
            action = Action.model_construct(tool=row["tool"], arguments=row["arguments"] or {}, actor=row["actor"],
                                            domain=row["domain"], value=row["value"], target=row["target"],
                                            context=row["context"] or {}, trace_id=None)  # fmt: skip
            if _kill_switched(decision):
                verdict = None
                result, reason = _BLOCKED, decision.get("reason", "kill switch")
            else:
                verdict = engine._judge(None, ruleset, action, now, stored=action, usage=usage, use_memory=False)[0]
                result, reason = verdict.result, verdict.reason
                # Memory only tightens: what it added to the recorded verdict, it adds to the candidate's.
                by_rules = DecisionResult(decision.get("rules_result") or row["result"])
                if SEVERITY[recorded] > SEVERITY[by_rules] and SEVERITY[recorded] > SEVERITY[result]:
                    result, reason = recorded, decision.get("reason", reason)
                if result is not _BLOCKED:
                    held = verdict.action or action  # a constrained allow's patched call holds its slots
                    for rid in verdict.counted_rules:
                        usage.hold(rid, held.actor, held.target, held.value, now)
                _count_fires(impact, verdict.matched, verdict.shadow)
            recorded_asks += recorded is _ASK
            candidate_asks += result is _ASK
            if result is not recorded:
                found = outcomes.get(row["request_id"], [])
                transitions[f"{recorded.value}->{result.value}"] += 1
                report.changed += 1
                getattr(report, _KIND[result]).add(found)
                if verdict is not None and result is not _ALLOWED:
                    wanted = "block" if result is _BLOCKED else "require_approval"
                    for rid in {m.rule_id for m in verdict.matched if m.effect == wanted}:
                        getattr(impact[rid], _KIND[result]).add(found)
                if len(report.examples) < examples:
                    report.examples.append(ChangedCall(
                        request_id=row["request_id"], tool=row["tool"], actor=row["actor"], decided_at=now,
                        recorded=recorded, candidate=result, reason=reason, outcome=_worst(found),
                        cost=sum(c for _, c in found)))  # fmt: skip
            report.decisions = n
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress(n, total)
    if progress is not None:
        progress(report.decisions, report.decisions)
    report.transitions = dict(sorted(transitions.items()))
    report.harm_avoided = report.newly_blocked.harmful
    report.cost_avoided = report.newly_blocked.cost
    report.successful_stopped = report.newly_blocked.succeeded
    report.approval_load_added = candidate_asks - recorded_asks
    return report


def _count_fires(impact: dict[str, RuleImpact], matched: Iterable[RuleMatch], shadow: Iterable[RuleMatch]) -> None:
    for rid in {m.rule_id for m in matched} | {m.rule_id for m in shadow}:
        impact[rid].fired += 1
