"""An approved call claimed after the policy changed is judged again by the rules in force.

An approval answers the question the rules asked when it was granted. If the rules have changed
since (a new policy version), the call is re-checked when it is claimed, by the engine's own
evaluation (so is a call asked under older rules and approved under newer ones: the person
answered the older question): blocked now, it does not run and the claim says why; still asking, or allowed, the
approval stands. The counters are not asked again: the call took its slots when it was decided.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clearance.errors import PolicyBlocks
from clearance.model import Action, DecisionResult

if TYPE_CHECKING:
    from collections.abc import Mapping

    from clearance.engine.core import Engine
    from clearance.store import SqlTx

__all__ = ["granted_under", "recheck_claim"]


class _Taken:
    """Counters for a call that holds its slots already: nothing more to count."""

    def count(self, rule_id: str, actor: str, since: datetime, cap: int | None = None) -> int:
        return 0

    def total_value(self, rule_id: str, actor: str, since: datetime) -> float:
        return 0.0

    def last_at(self, rule_id: str, actor: str, target: str | None) -> datetime | None:
        return None


def granted_under(approval: Mapping[str, Any], resolved: Mapping[str, Any]) -> str:
    """The policy version an approval was granted under, as its ``approval.resolved`` event in the
    audit chain records it (the version it was asked under, for events from before it did)."""
    return json.loads(resolved["body"])["payload"].get("policy_version") or approval["policy_version"]


def recheck_claim(engine: Engine, tx: SqlTx, row: Mapping[str, Any], approval: Mapping[str, Any],
                  resolved: Mapping[str, Any], now: datetime, arguments: Mapping[str, Any] | None) -> None:  # fmt: skip
    """Raise :class:`PolicyBlocks` (a :class:`NotApproved`) when the rules in force, newer than the
    approval, block the call. ``resolved`` is the approval's ``approval.resolved`` event row."""
    rules = engine._rules(tx)
    granted = granted_under(approval, resolved)
    if rules.policy_version == granted == approval["policy_version"]:
        return  # asked, granted and claimed under the same rules
    action = Action.model_construct(tool=row["tool"], arguments=dict(arguments if arguments is not None else row["arguments"]),
                                    actor=row["actor"], domain=row["domain"], value=row["value"], target=row["target"],
                                    context=row["context"] or {}, trace_id=row["trace_id"])  # fmt: skip
    verdict = engine._judge(None, rules, action, now, stored=action, usage=_Taken(), use_memory=False)[0]
    if verdict.result is DecisionResult.blocked:
        raise PolicyBlocks(f"{row['request_id']} was approved under policy version {granted}, but policy version "
                          f"{rules.policy_version} blocks it: {verdict.reason}; it was not run")  # fmt: skip
