"""The learning report: what memory changed, what that was worth, and whether its risk is honest.

Built from the audit log alone (decisions, outcomes, approval answers), so it can be produced
for any store, by any process, after the fact.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clearance.memory.cases import BAD_OUTCOMES

__all__ = ["LearningReport", "build_report", "calibration"]


def _bad(status: str, severity: float) -> float:
    if status in BAD_OUTCOMES:
        return 1.0
    return max(0.0, min(1.0, severity)) if status == "failed" else 0.0


def calibration(pairs: list[tuple[float, float]], bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error and a reliability table of (predicted risk,
    observed badness) pairs; plus the Brier score of always predicting the base rate, the
    yardstick a useful risk must beat."""
    n = len(pairs)
    if n == 0:
        return {"n": 0, "brier": None, "brier_base_rate": None, "ece": None, "reliability": []}
    base = sum(y for _, y in pairs) / n
    brier = sum((p - y) ** 2 for p, y in pairs) / n
    brier_base = sum((base - y) ** 2 for _, y in pairs) / n
    table: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for p, y in pairs:
        table[min(int(p * bins), bins - 1)].append((p, y))
    rows, ece = [], 0.0
    for i, cell in enumerate(table):
        if not cell:
            continue
        mean_p = sum(p for p, _ in cell) / len(cell)
        observed = sum(y for _, y in cell) / len(cell)
        ece += len(cell) / n * abs(mean_p - observed)
        rows.append({"from": i / bins, "to": (i + 1) / bins, "n": len(cell), "mean_risk": round(mean_p, 4),
                     "observed_bad_rate": round(observed, 4)})  # fmt: skip
    return {"n": n, "brier": round(brier, 5), "brier_base_rate": round(brier_base, 5), "ece": round(ece, 5),
            "reliability": rows}  # fmt: skip


@dataclass
class LearningReport:
    decisions: int = 0
    with_outcome: int = 0
    changed_by_memory: int = 0
    approvals_added: int = 0
    blocked_by_memory: int = 0
    #: Of the calls memory sent to approval: answered, rejected, approved then ran and went badly.
    changed_rejected: int = 0
    changed_approved_then_bad: int = 0
    changed_harm_cost_observed: float = 0.0
    #: Expected harm cost of the calls memory stopped (blocked or rejected): risk x the mean cost
    #: of the bad precedents each cited. An estimate: a stopped call reveals no outcome.
    harm_cost_avoided_estimate: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_report(events: Iterable[Mapping[str, Any]], *, examples: int = 20) -> LearningReport:
    """One pass over audit event rows (``type``, ``request_id``, ``body``) in order."""
    decisions: dict[str, dict[str, Any]] = {}
    worst: dict[str, tuple[float, float]] = {}  # request_id -> (badness, cost)
    answers: dict[str, str] = {}
    for ev in events:
        kind = ev["type"]
        if kind == "decision.made":
            decisions[ev["request_id"]] = json.loads(ev["body"])["payload"]["decision"]
        elif kind == "outcome.reported":
            p = json.loads(ev["body"])["payload"]
            bad, cost = _bad(p["status"], float(p.get("severity") or 0.0)), float(p.get("cost") or 0.0)
            old = worst.get(p["request_id"])
            worst[p["request_id"]] = (max(bad, old[0]), max(cost, old[1])) if old else (bad, cost)
        elif kind == "approval.resolved":
            answers[ev["request_id"]] = json.loads(ev["body"])["payload"]["resolution"]

    r = LearningReport(decisions=len(decisions))
    tools: dict[str, dict[str, Any]] = defaultdict(lambda: {"decisions": 0, "with_outcome": 0, "bad": 0.0,
                                                            "evidence_sum": 0.0, "changed_by_memory": 0})  # fmt: skip
    pairs: list[tuple[float, float]] = []
    for rid, d in decisions.items():
        t = tools[d["tool"]]
        t["decisions"] += 1
        t["evidence_sum"] += float(d.get("evidence") or 0.0)
        known = worst.get(rid)
        if known is not None:
            r.with_outcome += 1
            t["with_outcome"] += 1
            t["bad"] += known[0]
            pairs.append((float(d["risk_score"]), known[0]))
        rules_result = d.get("rules_result")
        if rules_result is None or rules_result == d["result"]:
            continue
        r.changed_by_memory += 1
        t["changed_by_memory"] += 1
        if d["result"] == "requires_approval":
            r.approvals_added += 1
        else:
            r.blocked_by_memory += 1
        answer = answers.get(rid)
        stopped = d["result"] == "blocked" or answer == "rejected"
        if answer == "rejected":
            r.changed_rejected += 1
        if known is not None and known[0] >= 0.5:
            r.changed_approved_then_bad += 1
            r.changed_harm_cost_observed += known[1]
        if stopped:
            costs = [p.get("cost") or 0.0 for p in d.get("precedents") or []
                     if p.get("outcome") in BAD_OUTCOMES or p.get("outcome") == "rejected"]  # fmt: skip
            if costs:
                r.harm_cost_avoided_estimate += float(d["risk_score"]) * sum(costs) / len(costs)
        if len(r.changed) < examples:
            r.changed.append({"request_id": rid, "tool": d["tool"], "rules_result": rules_result, "result": d["result"],
                              "risk_score": d["risk_score"], "reason": d["reason"], "answer": answer,
                              "outcome_bad": None if known is None else known[0] >= 0.5})  # fmt: skip
    r.harm_cost_avoided_estimate = round(r.harm_cost_avoided_estimate, 2)
    r.calibration = calibration(pairs)
    for name, t in sorted(tools.items()):
        r.tools[name] = {
            "decisions": t["decisions"],
            "with_outcome": t["with_outcome"],
            "bad_rate": round(t["bad"] / t["with_outcome"], 4) if t["with_outcome"] else None,
            "mean_evidence": round(t["evidence_sum"] / t["decisions"], 3),
            "changed_by_memory": t["changed_by_memory"],
        }
    return r
