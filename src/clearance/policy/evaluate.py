"""Judging one action against a rule set.

Pure: the caller supplies the clock and a :class:`Usage` view of past counted calls, so the same
function serves the embedded engine, the server and dry runs, and tests can pin time exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any, Protocol

from clearance.model import SEVERITY, Action, ArgumentPatch, DecisionResult, RuleMatch
from clearance.policy.rules import CompiledRule, RuleSet

__all__ = ["Usage", "UsageLookup", "Verdict", "evaluate", "selector_matches", "usage_lookups"]

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Usage(Protocol):
    """Past calls that still hold a slot under a rule (allowed, or waiting for approval)."""

    def count(self, rule_id: str, actor: str, since: datetime, cap: int | None = None) -> int:
        """Slots held since ``since``; may stop counting at ``cap``."""
        ...

    def total_value(self, rule_id: str, actor: str, since: datetime) -> float: ...

    def last_at(self, rule_id: str, actor: str, target: str | None) -> datetime | None: ...


@dataclass
class Verdict:
    result: DecisionResult
    reason: str
    matched: list[RuleMatch] = field(default_factory=list)
    shadow: list[RuleMatch] = field(default_factory=list)
    #: Rules whose counters this call takes a slot in, unless it ends up blocked.
    counted_rules: list[str] = field(default_factory=list)
    approval_ttl: timedelta | None = None
    approvals_required: int = 1
    #: Arguments constrained-allow rules changed; ``action`` is then the patched call, which is
    #: the one judged (and the only one that may run).
    patches: list[ArgumentPatch] = field(default_factory=list)
    action: Action | None = None


def _num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def _amount(v: float) -> str:
    return f"{v:,.2f}"


def selector_matches(rule: CompiledRule, action: Action) -> bool:
    return rule.domain_matches(action.domain) and rule.tool_matches(action.tool) and rule.actor_matches(action.actor)


#: One question to :class:`Usage`, as a hashable key: ``("count", rule_id, actor, since, cap)``,
#: ``("total", rule_id, actor, since)`` or ``("last", rule_id, actor, target, since)``. The
#: last one asks for the newest slot after ``since`` only: a cooldown cannot fire for an older one.
UsageLookup = tuple[Any, ...]

#: Slack on a cooldown's look-back, so that rounding its seconds to microseconds can never
#: leave out a slot that would still fire.
_COOLDOWN_SLACK = timedelta(seconds=1)


def usage_lookups(rules: RuleSet, action: Action, now: datetime) -> list[UsageLookup]:
    """The questions :func:`evaluate` will put to :class:`Usage` for this call, so that a store
    can answer them all in one round trip. Mirrors :func:`_check_rule`; a question left out
    costs only a query of its own, never a different answer."""
    out: list[UsageLookup] = []
    actor = action.actor
    for rule in rules.candidates(action.domain, action.tool):
        if not rule.counts or not rule.actor_matches(actor):
            continue
        r, rid = rule.rule, rule.id
        if r.cooldown_seconds is not None:
            out.append(("last", rid, actor, action.target, now - timedelta(seconds=r.cooldown_seconds) - _COOLDOWN_SLACK))
        if r.max_per_hour is not None:
            out.append(("count", rid, actor, now - _HOUR, r.max_per_hour))
        if r.max_per_day is not None:
            out.append(("count", rid, actor, now - _DAY, r.max_per_day))
        if r.budget is not None and action.value is not None:
            out.append(("total", rid, actor, now - _DAY))
    return out


def evaluation_context(action: Action, now: datetime) -> dict[str, Any]:
    """The variables a `when` condition sees. A missing value is 0, never a reason to block.

    ``now`` is handed over in UTC: the CEL runtime cannot convert datetimes in other zones
    (every condition would fail), and CEL's timestamp accessors are defined in UTC anyway.
    """
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return {
        "tool": action.tool,
        "args": action.arguments,
        "actor": action.actor,
        "domain": action.domain,
        "value": float(action.value) if action.value is not None else 0.0,
        "target": action.target,
        "context": action.context,
        "now": now,
    }


def _in_hours(rule: CompiledRule, now: datetime) -> tuple[bool, datetime]:
    """Whether ``now`` is inside the rule's window, and ``now`` in the window's zone."""
    assert rule.hours is not None and rule.rule.allowed_hours is not None
    start, end, zone = rule.hours
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    # An end of 24 (``time.max``) includes the day's last instant.
    before_end = t < end or end == time.max
    inside = (start <= t and before_end) if start < end else (t >= start or before_end)
    days = rule.rule.allowed_hours.days
    if days and _WEEKDAYS[local.weekday()] not in days:
        inside = False
    return inside, local


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def patch_action(rules: RuleSet, action: Action, now: datetime) -> tuple[Action, list[ArgumentPatch]]:
    """Apply the constrained-allow rules (``clamp``, ``override``) that select ``action`` and whose
    ``when`` holds, in file order (shadow rules patch nothing). A clamped argument that was the
    call's ``value`` carries the value with it. A ``when`` that cannot be evaluated patches nothing:
    the call is then judged as it came, by every other rule."""
    patchers = [r for r in rules.candidates(action.domain, action.tool)
                if r.patches and r.rule.status == "active" and r.actor_matches(action.actor)]  # fmt: skip
    if not patchers:
        return action, []
    ctx = evaluation_context(action, now)
    args, value, patches = dict(action.arguments), action.value, []
    for rule in patchers:
        if rule.condition is not None:
            try:
                if not rule.condition.evaluate(ctx):
                    continue
            except Exception:  # noqa: BLE001 - no patch; the call is judged unpatched
                continue
        for name, bounds in (rule.rule.clamp or {}).items():
            original = args.get(name)
            if not _is_number(original):
                continue
            new = original
            if bounds.max is not None and new > bounds.max:
                new = bounds.max
            if bounds.min is not None and new < bounds.min:
                new = bounds.min
            if new != original:
                new = int(new) if isinstance(original, int) and float(new).is_integer() else new
                args[name] = new
                patches.append(ArgumentPatch(rule_id=rule.id, argument=name, kind="clamp", original=original, value=new))
                if value is not None and float(value) == float(original):
                    value = float(new)
        for name, fixed in (rule.rule.override or {}).items():
            if args.get(name, _ABSENT) != fixed:
                patches.append(ArgumentPatch(rule_id=rule.id, argument=name, kind="override", original=args.get(name), value=fixed))
                args[name] = fixed
    if not patches:
        return action, []
    return action.model_copy(update={"arguments": args, "value": value}), patches


_ABSENT = object()


def _check_rule(rule: CompiledRule, action: Action, now: datetime, usage: Usage, ctx: dict[str, Any]) -> list[RuleMatch]:
    r, rid, tool, actor = rule.rule, rule.id, action.tool, action.actor
    shadow = r.status == "shadow"
    out: list[RuleMatch] = []
    if rule.patches:
        return out  # a constrained allow: it changed the call (patch_action), it does not fire

    def fire(effect: str, limit: str, reason: str) -> None:
        out.append(RuleMatch(rule_id=rid, rule_version=rule.version, effect=effect, limit=limit, reason=reason, shadow=shadow))  # type: ignore[arg-type]

    if rule.denied is not None and rule.denied(actor):
        fire("block", "deny_actors", f"actor {actor} is in deny_actors of rule {rid}")
    if rule.allowed is not None and not rule.allowed(actor):
        fire("block", "allow_actors", f"actor {actor} is not in allow_actors of rule {rid}")
    if rule.hours is not None:
        inside, local = _in_hours(rule, now)
        if not inside:
            fire("block", "allowed_hours", f"{tool} at {local:%a %H:%M} {r.allowed_hours.tz} is outside allowed_hours "  # type: ignore[union-attr]
                 f"{r.allowed_hours.describe()} in rule {rid}")  # type: ignore[union-attr]  # fmt: skip
    value = action.value
    if value is not None:
        if r.max_value is not None and value > r.max_value:
            fire("block", "max_value", f"{tool} of {_amount(value)} exceeds max_value {_num(r.max_value)} in rule {rid}")
        if r.min_value is not None and value < r.min_value:
            fire("block", "min_value", f"{tool} of {_amount(value)} is below min_value {_num(r.min_value)} in rule {rid}")
        if r.require_approval_above is not None and value > r.require_approval_above:
            fire("require_approval", "require_approval_above",
                 f"{tool} of {_amount(value)} is above require_approval_above {_num(r.require_approval_above)} in rule {rid}")  # fmt: skip
    if r.cooldown_seconds is not None:
        last = usage.last_at(rid, actor, action.target)
        if last is not None and (wait := r.cooldown_seconds - (now - last).total_seconds()) > 0:
            on = f" on {action.target}" if action.target else ""
            fire("block", "cooldown_seconds", f"actor {actor} must wait {wait:.0f}s more before {tool}{on} "
                 f"(cooldown_seconds {_num(r.cooldown_seconds)} in rule {rid})")  # fmt: skip
    for limit, window, cap, words in (
        ("max_per_hour", _HOUR, r.max_per_hour, "the last hour"),
        ("max_per_day", _DAY, r.max_per_day, "the last 24 hours"),
    ):
        if cap is not None and (n := usage.count(rid, actor, now - window, cap)) >= cap:
            fire("block", limit, f"actor {actor} reached {limit} {cap} in rule {rid} ({n} calls in {words})")
    if r.budget is not None and value is not None:
        spent = usage.total_value(rid, actor, now - _DAY)
        if spent + value > r.budget:
            fire("block", "budget", f"{tool} of {_amount(value)} would bring actor {actor}'s 24-hour total "
                 f"to {_amount(spent + value)}, over budget {_num(r.budget)} in rule {rid}")  # fmt: skip
    effect = r.effect or "block"
    verb = "blocks" if effect == "block" else "requires approval for"
    if rule.condition is not None:
        try:
            holds = rule.condition.evaluate(ctx)
        except Exception as exc:  # noqa: BLE001 - any failure to decide must fail closed
            fire(effect, "when", f"condition `{r.when}` of rule {rid} could not be evaluated ({exc}), so it {verb} the call")
        else:
            if holds:
                fire(effect, "when", f"condition `{r.when}` holds, so rule {rid} {verb} {tool}")
    elif r.effect is not None:
        fire(effect, "effect", f"rule {rid} {verb} every {tool} call")
    return out


def evaluate(rules: RuleSet, action: Action, now: datetime, usage: Usage) -> Verdict:
    """The verdict on ``action``, or, where constrained-allow rules patch it, on the patched call
    (``Verdict.action``), judged by every rule."""
    patched, patches = patch_action(rules, action, now)
    verdict = _evaluate(rules, patched, now, usage)
    if patches:
        verdict.patches, verdict.action = patches, patched
        changed = ", ".join(f"{p.argument} {p.original!r} -> {p.value!r} by rule {p.rule_id}" for p in patches)
        verdict.reason = f"with arguments changed ({changed}): {verdict.reason}"
    return verdict


def _evaluate(rules: RuleSet, action: Action, now: datetime, usage: Usage) -> Verdict:
    ctx = evaluation_context(action, now)
    matched: list[RuleMatch] = []
    shadow: list[RuleMatch] = []
    counted: list[str] = []
    applicable = 0
    ttl: timedelta | None = None
    approvals_required = 1
    actor = action.actor
    for rule in rules.candidates(action.domain, action.tool):  # not paused, domain and tool match
        if not rule.actor_matches(actor):
            continue
        applicable += 1
        if rule.counts:
            counted.append(rule.id)
        fired = _check_rule(rule, action, now, usage, ctx)
        if rule.rule.status == "shadow":
            shadow.extend(fired)
            continue
        matched.extend(fired)
        if any(m.effect == "require_approval" for m in fired):
            if rule.rule.approval_ttl is not None:
                ttl = rule.rule.approval_ttl if ttl is None else min(ttl, rule.rule.approval_ttl)
            approvals_required = max(approvals_required, rule.rule.approvals_required)

    if not matched:
        if applicable == 0:
            reason = "no rule applies to this call"
        else:
            reason = f"within the limits of {applicable} applicable rule{'s' if applicable != 1 else ''}"
        return Verdict(DecisionResult.allowed, reason, [], shadow, counted)
    result = max(
        (DecisionResult.blocked if m.effect == "block" else DecisionResult.requires_approval for m in matched),
        key=SEVERITY.__getitem__,
    )
    wanted = "block" if result is DecisionResult.blocked else "require_approval"
    lead = next(m for m in matched if m.effect == wanted)
    others = len(matched) - 1
    reason = lead.reason + (f" (and {others} more limit{'s' if others != 1 else ''} fired)" if others else "")
    return Verdict(result, reason, matched, shadow, counted, ttl, approvals_required)
