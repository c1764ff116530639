"""Turning memory's risk estimate into a verdict: by expected cost when the rules file declares
its ``costs``, and by the thresholds it sets (all of them, as before, when it declares none).

Pure, like :mod:`clearance.policy.evaluate`: the engine passes the rules' verdict and memory's
estimate and gets the final verdict. Memory only tightens: it can send an allowed call to
approval or block it, never the reverse, so a rule a person wrote is never overruled by
statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from clearance.memory import RiskEstimate
from clearance.memory.reliability import CATCH_PRIOR, FALSE_REJECT_PRIOR, cheapest
from clearance.model import Action, DecisionResult
from clearance.policy.evaluate import Verdict
from clearance.policy.rules import RISK_DEFAULTS, CostPolicy, RiskPolicy, RuleSet, remember

__all__ = ["ResolvedRisk", "apply_risk", "resolve_risk"]


@dataclass(frozen=True)
class ResolvedRisk:
    """Every :class:`RiskPolicy` field with a value, and where each came from."""

    approval_above: float | None  # None: costs are declared and no threshold is set
    block_above: float | None
    approval_cost_above: float | None
    block_cost_above: float | None
    min_evidence: float
    novel: str
    prior: float | None
    prior_strength: float
    half_life_days: float
    outcome_error_rate: float | None  # None: memory's own estimate
    enabled: bool
    source: str  # e.g. "rule refunds", "domain payments", "file", "defaults"
    costs: CostPolicy | None = None  # the domain's, else the file's


_FIELDS = [f.name for f in fields(ResolvedRisk) if f.name not in ("source", "costs")]
#: With costs declared, these are not defaulted: the costs decide, and a threshold only adds to them.
_COST_DECIDED = frozenset({"approval_above", "block_above"})


def resolve_risk(rules: RuleSet, action: Action) -> ResolvedRisk:
    """Field by field: the first matching active rule that sets it (file order), then the
    action's domain, then the file's ``risk``, then :data:`RISK_DEFAULTS`. Memoised per rule
    set: the answer depends on the call's domain, tool and actor only."""
    key = (action.domain, action.tool, action.actor)
    found = rules._risk.get(key)
    if found is None:
        found = _resolve(rules, action)
        remember(rules._risk, key, found)
    return found  # type: ignore[no-any-return]


def _resolve(rules: RuleSet, action: Action) -> ResolvedRisk:
    layers: list[tuple[str, RiskPolicy]] = []
    for rule in rules.candidates(action.domain, action.tool):
        if rule.rule.risk is not None and rule.rule.status == "active" and rule.actor_matches(action.actor):
            layers.append((f"rule {rule.id}", rule.rule.risk))
    domain = rules.source.domains.get(action.domain)
    if domain is not None and domain.risk is not None:
        layers.append((f"domain {action.domain}", domain.risk))
    if rules.source.risk is not None:
        layers.append(("file", rules.source.risk))
    costs = domain.costs if domain is not None and domain.costs is not None else rules.source.costs
    values: dict[str, object] = {}
    used: set[str] = set()
    for name in _FIELDS:
        for where, policy in layers:
            v = getattr(policy, name)
            if v is not None:
                values[name] = v
                used.add(where)
                break
        else:
            values[name] = None if costs is not None and name in _COST_DECIDED else RISK_DEFAULTS[name]
    source = next((where for where, _ in layers if where in used), "defaults")  # the most specific
    return ResolvedRisk(**values, source=source, costs=costs)  # type: ignore[arg-type]


def apply_risk(verdict: Verdict, estimate: RiskEstimate, policy: ResolvedRisk) -> Verdict:
    """The verdict once memory has had its say; ``verdict`` itself is left unchanged."""
    if not policy.enabled or verdict.result is DecisionResult.blocked:
        return verdict
    wanted = DecisionResult.allowed
    why = ""
    risk = estimate.risk
    # Thin evidence already pulls the estimate towards the prior; asking a person is the right
    # answer to a risky-looking call, but blocking one outright needs min_evidence behind it.
    may_block = estimate.evidence >= policy.min_evidence and bool(estimate.precedents)
    if policy.costs is not None:
        wanted, why = _by_cost(estimate, policy.costs)
    if policy.block_above is not None and risk > policy.block_above and may_block:
        wanted, why = DecisionResult.blocked, f"risk {risk:.2f} is above block_above {policy.block_above:g}"
    elif policy.approval_above is not None and risk > policy.approval_above and _rank(wanted) < 1:
        wanted, why = DecisionResult.requires_approval, f"risk {risk:.2f} is above approval_above {policy.approval_above:g}"
    cost = estimate.expected_cost
    if cost is not None and _rank(wanted) < 2:
        # Thresholds on expected harm: a small risk on a large sum is a large risk.
        if policy.block_cost_above is not None and cost > policy.block_cost_above:
            wanted, why = DecisionResult.blocked, f"expected harm {cost:,.2f} is above block_cost_above {policy.block_cost_above:g}"
        elif policy.approval_cost_above is not None and cost > policy.approval_cost_above and _rank(wanted) < 1:
            wanted, why = (DecisionResult.requires_approval,
                           f"expected harm {cost:,.2f} is above approval_cost_above {policy.approval_cost_above:g}")  # fmt: skip
    if wanted is DecisionResult.allowed and estimate.novel and policy.novel != "allow":
        wanted = DecisionResult.blocked if policy.novel == "block" else DecisionResult.requires_approval
        why = f"novel calls get {policy.novel.replace('_', ' ')}"
    if _rank(wanted) <= _rank(verdict.result):
        return verdict
    where = "" if policy.source == "defaults" else f" ({policy.source})"
    reason = f"{estimate.summary}: {why}{where}"
    return Verdict(wanted, reason, verdict.matched, verdict.shadow, verdict.counted_rules,
                   verdict.approval_ttl, verdict.approvals_required)  # fmt: skip


def _by_cost(estimate: RiskEstimate, costs: CostPolicy) -> tuple[DecisionResult, str]:
    """The verdict of least expected cost, with memory's estimates of the reviewer; a block
    that the evidence does not yet make clear becomes a question to a person."""
    catch = estimate.reviewer_catch
    false_reject = estimate.reviewer_false_reject
    if catch is None or false_reject is None:
        catch = CATCH_PRIOR[0] / sum(CATCH_PRIOR)
        false_reject = FALSE_REJECT_PRIOR[0] / sum(FALSE_REJECT_PRIOR)
    harm, refused = costs.harm_of(estimate.stake), costs.refused_of(estimate.stake)
    best, cost = cheapest(estimate.risk, harm, refused, costs.review, catch, false_reject)
    if best == "blocked":
        # A blocked call never reveals how it would have gone; a person's answer does. So a
        # person is asked instead when that costs no more than knowing could save: what the
        # block costs beyond the cheapest verdict at the risk's cautious lower bound, on every
        # call of this kind the answer informs (so a kind that keeps coming while nothing is
        # learnt about it is asked about again, and blocking does not lock ignorance in).
        lo = estimate.risk if estimate.risk_lo is None else estimate.risk_lo
        _, at_lo = cheapest(lo, harm, refused, costs.review, catch, false_reject)
        worth = (cost["blocked"] - min(at_lo.values())) * max(1.0, estimate.recurrence)
        if cost["requires_approval"] - cost["blocked"] <= worth:
            best = "requires_approval" if cost["requires_approval"] < cost["allowed"] else "allowed"
    if best == "allowed":
        return DecisionResult.allowed, ""
    word = {"blocked": "blocking", "requires_approval": "asking a person"}[best]
    return (DecisionResult(best), f"risk {estimate.risk:.2f} of harm {harm:,.2f}: {word} costs {cost[best]:,.2f} "
                                  f"against {cost['allowed']:,.2f} allowed")  # fmt: skip


def _rank(result: DecisionResult) -> int:
    return {DecisionResult.allowed: 0, DecisionResult.requires_approval: 1, DecisionResult.blocked: 2}[result]
