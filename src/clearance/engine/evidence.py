"""A shadow rule's evidence: the calls it would have fired on, joined with their recorded outcomes.

A rule in ``shadow`` status is judged on every call but never enforced; each decision records
where it would have fired (``shadow_rules``). Before such a rule is turned on, this says how
often it would have been right (precision: of its calls with a known outcome, the share that
went wrong) and what it would have cost in friction (calls that went well and that it would
have blocked or sent to a person). Promotion refuses a rule with no such evidence unless forced.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from clearance.engine.backtest import BAD
from clearance.errors import ConflictError, NotFound
from clearance.store.history import iter_decisions, iter_outcomes

if TYPE_CHECKING:
    from clearance.engine.core import Engine

__all__ = ["Promotion", "RuleEvidence", "promote_rule", "rule_evidence"]


class RuleEvidence(BaseModel):
    """What the record says of one rule's version while in shadow."""

    rule_id: str
    rule_version: int
    status: str
    since: datetime | None = None
    decisions: int = Field(description="Decisions read.")
    fired: int = Field(description="Calls it would have fired on (this version).")
    would_block: int = 0
    would_ask: int = 0
    with_outcome: int = Field(default=0, description="Of those, calls with an outcome reported.")
    harmful: int = 0
    bad: int = Field(default=0, description="Calls that failed, were reverted or were harmful.")
    succeeded: int = 0
    cost: float = Field(default=0.0, description="The outcome cost of the calls it would have fired on.")
    precision: float | None = Field(default=None, description="bad / with_outcome; none without outcomes.")
    friction: int = Field(default=0, description="Calls that succeeded and that it would have stopped or sent to review.")
    older_versions_fired: int = Field(default=0, description="Fires recorded of earlier versions of the rule (not counted).")


class Promotion(BaseModel):
    rule_id: str
    promoted: bool
    forced: bool
    policy_version: int
    evidence: RuleEvidence


def rule_evidence(engine: Engine, rule_id: str, *, since: datetime | None = None) -> RuleEvidence:
    rule = next((r for r in engine.current_rules().rules if r.id == rule_id), None)
    if rule is None:
        raise NotFound(f"no rule {rule_id!r} in the rules in force")
    ev = RuleEvidence(rule_id=rule_id, rule_version=rule.version, status=rule.rule.status, since=since, decisions=0, fired=0)
    fired: dict[str, str] = {}  # request id -> effect
    with engine.store.read() as tx:
        for row in iter_decisions(tx, since):
            ev.decisions += 1
            for m in row["decision"].get("shadow_rules") or ():
                if m["rule_id"] != rule_id:
                    continue
                if m.get("rule_version") != rule.version:
                    ev.older_versions_fired += 1
                    break
                if fired.get(row["request_id"]) != "block":
                    fired[row["request_id"]] = m["effect"]
        outcomes: dict[str, set[str]] = defaultdict(set)
        for o in iter_outcomes(tx, since):
            if o["request_id"] in fired:
                outcomes[o["request_id"]].add(o["status"])
                ev.cost += float(o["cost"])
    ev.fired = len(fired)
    ev.would_block = sum(e == "block" for e in fired.values())
    ev.would_ask = ev.fired - ev.would_block
    for statuses in outcomes.values():
        ev.with_outcome += 1
        if statuses & BAD:
            ev.bad += 1
            ev.harmful += "harmful" in statuses
        else:
            ev.succeeded += 1
    ev.friction = ev.succeeded
    ev.precision = ev.bad / ev.with_outcome if ev.with_outcome else None
    return ev


def promote_rule(engine: Engine, rule_id: str, *, force: bool = False, min_outcomes: int = 1,
                 applied_by: str | None = None) -> Promotion:  # fmt: skip
    """Turn a shadow rule on, if the record holds evidence of it (``min_outcomes`` calls it would
    have fired on, with outcomes), or ``force``."""
    ev = rule_evidence(engine, rule_id)
    if ev.status != "shadow":
        raise ConflictError(f"rule {rule_id!r} is {ev.status}, not in shadow; only a shadow rule is promoted")
    if ev.with_outcome < max(min_outcomes, 1) and not force:
        raise ConflictError(
            f"no evidence to promote rule {rule_id!r} on: it would have fired on {ev.fired} call(s), "
            f"{ev.with_outcome} with an outcome (at least {max(min_outcomes, 1)} needed); force it to promote anyway")
    current = next(r for r in engine.current_rules().rules if r.id == rule_id)
    info = engine.edit_rule("replace", rule_id, current.rule.model_copy(update={"status": "active"}), applied_by=applied_by)
    return Promotion(rule_id=rule_id, promoted=True, forced=force and ev.with_outcome < max(min_outcomes, 1),
                     policy_version=info.version, evidence=ev)  # fmt: skip
