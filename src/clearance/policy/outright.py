"""Whether the policy blocks every call of a tool by an actor, whatever its arguments.

A gateway that lists tools to a model hides those: offering a tool that can only be refused
wastes the model's turns and tells it what exists. Only what holds for any arguments counts
(a kill switch, an actor denied or not allowed, a rule that blocks every call of the tool);
limits and conditions depend on the call and are left to the decision.
"""

from __future__ import annotations

from collections.abc import Iterable

from clearance.model import KillSwitch
from clearance.policy.rules import RuleSet

__all__ = ["blocked_outright"]


def blocked_outright(rules: RuleSet, switches: Iterable[KillSwitch], *, tool: str, actor: str, domain: str) -> str | None:
    """The reason every call of ``tool`` by ``actor`` in ``domain`` is blocked, or ``None``."""
    for switch in switches:
        if switch.covers(domain=domain, tool=tool, actor=actor):
            return f"a kill switch is on for {'everything' if switch.scope == 'all' else f'{switch.scope} {switch.value}'}"
    for rule in rules.candidates(domain, tool):  # active or shadow, domain and tool match
        r = rule.rule
        if r.status != "active" or not rule.actor_matches(actor):
            continue
        if rule.denied is not None and rule.denied(actor):
            return f"actor {actor} is in deny_actors of rule {rule.id}"
        if rule.allowed is not None and not rule.allowed(actor):
            return f"actor {actor} is not in allow_actors of rule {rule.id}"
        if r.when is None and r.effect == "block":
            return f"rule {rule.id} blocks every {tool} call"
    return None
