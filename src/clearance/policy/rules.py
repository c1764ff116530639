"""Rules: the declarative half of a decision.

A rules file is validated whole before anything takes effect: YAML syntax, unknown keys,
negative limits, time zones and CEL conditions all fail at load with the rule id and the
field named, so a bad file can never half-apply.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from clearance.errors import RuleError
from clearance.model import canonical_json
from clearance.policy.conditions import Condition, compile_condition
from clearance.redaction import RedactionSettings

__all__ = ["AllowedHours", "CompiledRule", "CostPolicy", "Rule", "RuleFile", "RuleSet", "load_rules", "parse_rules", "rules_json_schema"]

_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_duration(value: Any) -> timedelta:
    """Accepts seconds as a number, or text such as ``"24h"``, ``"1h30m"``, ``"2d"``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 3600, '24h' or '1h30m'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)) and any(m.groups()):
        d, h, mi, s = (int(g or 0) for g in m.groups())
        seconds = d * 86400 + h * 3600 + mi * 60 + s
    else:
        raise ValueError(f"expected a duration such as 3600, '24h' or '1h30m', got {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def _parse_clock(value: Any) -> time:
    if isinstance(value, bool):
        raise ValueError("expected an hour (0-24) or 'HH:MM'")
    if isinstance(value, int):
        if not 0 <= value <= 24:
            raise ValueError(f"hour {value} is outside 0-24")
        return time.max if value == 24 else time(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,2}:\d{2}", value):
        h, m = map(int, value.split(":"))
        if h == 24 and m == 0:
            return time.max
        if 0 <= h < 24 and 0 <= m < 60:
            return time(h, m)
    raise ValueError(f"expected an hour (0-24) or 'HH:MM', got {value!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AllowedHours(_Strict):
    """A daily window in local time; ``start > end`` wraps past midnight (22 to 6)."""

    start: int | str = Field(description="Hour 0-24 or 'HH:MM', inclusive.")
    end: int | str = Field(description="Hour 0-24 or 'HH:MM', exclusive.")
    tz: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin.")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        default=None, description="Weekdays the window applies on (local time); all days when absent."
    )

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: int | str) -> int | str:
        _parse_clock(v)
        return v

    @field_validator("tz")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _nonempty(self) -> AllowedHours:
        if _parse_clock(self.start) == _parse_clock(self.end):
            raise ValueError("allowed_hours start and end are equal: the window would be empty")
        return self

    def describe(self) -> str:
        fmt = lambda v: f"{v:02d}:00" if isinstance(v, int) else v  # noqa: E731
        days = f" on {', '.join(self.days)}" if self.days else ""
        return f"{fmt(self.start)}-{fmt(self.end)} {self.tz}{days}"


#: What a rules file may write for a duration; the model holds a timedelta.
Duration = Annotated[
    timedelta,
    WithJsonSchema({"anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
        {"type": "string", "pattern": r"^\s*(\d+d)?\s*(\d+h)?\s*(\d+m)?\s*(\d+s)?\s*$", "examples": ["24h", "1h30m"]},
    ]}),
]  # fmt: skip


class RiskPolicy(_Strict):
    """How memory's risk estimate may change a verdict. Every field is optional: an unset one
    is taken from the first matching rule that sets it, then the action's domain entry, then
    the file's ``risk``, then the built-in defaults (:data:`RISK_DEFAULTS`). Memory only ever
    tightens a verdict: it never allows a call the rules block or send to approval."""

    approval_above: float | None = Field(default=None, ge=0, le=1, description="Risk above it: requires approval.")
    block_above: float | None = Field(default=None, ge=0, le=1, description="Risk above it: blocked.")
    approval_cost_above: float | None = Field(
        default=None, ge=0,
        description="Expected harm (risk x value at stake, in the value's unit) above it: requires approval.",
    )  # fmt: skip
    block_cost_above: float | None = Field(
        default=None, ge=0,
        description="Expected harm above it: blocked, even on thin evidence (a 4% risk on 10,000 is 400 at stake).",
    )  # fmt: skip
    min_evidence: float | None = Field(
        default=None, ge=0,
        description="Weighted precedents needed before risk may block a call (a close, recent precedent weighs about 1).",
    )  # fmt: skip
    novel: Literal["allow", "require_approval", "block"] | None = Field(
        default=None, description="What a call gets when memory has cases of its tool but none similar to it."
    )
    prior: float | None = Field(
        default=None, ge=0, le=1, description="Probability of a bad outcome assumed before any evidence."
    )
    prior_strength: float | None = Field(
        default=None, gt=0, description="How many precedents' worth of weight the prior carries."
    )
    half_life_days: float | None = Field(
        default=None, gt=0, description="Age at which a precedent counts half as much as a fresh one."
    )
    outcome_error_rate: float | None = Field(
        default=None, ge=0, lt=0.5,
        description="Share of outcome reports believed wrong (a harmless call reported harmful, or the reverse); "
                    "risk is corrected for it, so it estimates real harm rather than reported harm. "
                    "Unset: memory estimates it from the outcomes it sees.",
    )  # fmt: skip
    enabled: bool | None = Field(default=None, description="false: risk is estimated and recorded, never enforced.")

    @model_validator(mode="after")
    def _ordered(self) -> RiskPolicy:
        if self.approval_above is not None and self.block_above is not None and self.approval_above > self.block_above:
            raise ValueError(f"approval_above {self.approval_above:g} is above block_above {self.block_above:g}")
        a, b = self.approval_cost_above, self.block_cost_above
        if a is not None and b is not None and a > b:
            raise ValueError(f"approval_cost_above {a:g} is above block_cost_above {b:g}")
        return self


#: The values a :class:`RiskPolicy` field takes when nothing in the rules file sets it.
RISK_DEFAULTS: dict[str, Any] = {
    "approval_above": 0.5,
    "block_above": 0.9,
    "approval_cost_above": None,  # None: no limit on expected harm
    "block_cost_above": None,
    "min_evidence": 2.0,
    "novel": "allow",
    "prior": None,  # None: the tool's own shrunk base rate of bad outcomes
    "prior_strength": 4.0,
    "half_life_days": 90.0,
    "outcome_error_rate": None,  # None: estimated by memory from the outcomes it sees
    "enabled": True,
}


class CostPolicy(_Strict):
    """What outcomes cost this deployment, in the unit of ``value``. With costs declared, memory's
    risk becomes a verdict by expected cost: allow, ask a person (whose reliability memory
    estimates from the answers and later outcomes it sees) or block, whichever costs least.
    A team states its costs; the thresholds follow from them."""

    harm: float = Field(default=0.0, ge=0, description="Cost of a call that ends badly, besides its value.")
    harm_per_value: float = Field(default=1.0, ge=0, description="Plus this much per unit of the call's value.")
    harm_value_cap: float | None = Field(
        default=None, ge=0, description="Value counted towards harm at most (none: all of it)."
    )
    refused: float = Field(default=0.0, ge=0, description="Cost of refusing (blocking or rejecting) a harmless call.")
    refused_per_value: float = Field(default=0.0, ge=0, description="Plus this much per unit of its value.")
    review: float = Field(default=0.0, ge=0, description="Cost of a person's review of one call.")

    def harm_of(self, value: float | None) -> float:
        v = max(value or 0.0, 0.0)
        if self.harm_value_cap is not None:
            v = min(v, self.harm_value_cap)
        return self.harm + self.harm_per_value * v

    def refused_of(self, value: float | None) -> float:
        return self.refused + self.refused_per_value * max(value or 0.0, 0.0)


class DomainPolicy(_Strict):
    """Settings for every call in one domain."""

    risk: RiskPolicy | None = None
    costs: CostPolicy | None = Field(default=None, description="This domain's costs (instead of the file's).")


class Clamp(_Strict):
    """Bounds a numeric argument is kept within (a constrained allow)."""

    min: float | None = Field(default=None, description="Below it: raised to it.")
    max: float | None = Field(default=None, description="Above it: lowered to it.")

    @model_validator(mode="after")
    def _bounds(self) -> Clamp:
        if self.min is None and self.max is None:
            raise ValueError("a clamp needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clamp min {self.min:g} is above max {self.max:g}")
        return self


class Rule(_Strict):
    """One rule: a selector, then limits; any limit it breaks makes it fire."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    description: str | None = None
    domain: str | None = Field(default=None, description="Domain name or glob; any domain when absent.")
    tool: str | None = Field(default=None, description="Tool name or glob; any tool when absent.")
    actors: list[str] | None = Field(default=None, description="Actor names or globs; any actor when absent.")
    max_value: float | None = Field(default=None, ge=0, description="Above it: blocked.")
    min_value: float | None = Field(default=None, ge=0, description="Below it: blocked.")
    require_approval_above: float | None = Field(default=None, ge=0, description="Above it: requires approval.")
    max_per_hour: int | None = Field(default=None, ge=0, description="Per actor, rolling 60 minutes.")
    max_per_day: int | None = Field(default=None, ge=0, description="Per actor, rolling 24 hours.")
    cooldown_seconds: float | None = Field(default=None, ge=0, description="Per actor and target.")
    allowed_hours: AllowedHours | None = None
    allow_actors: list[str] | None = Field(default=None, description="Only these actors (globs); others blocked.")
    deny_actors: list[str] | None = Field(default=None, description="These actors (globs) are blocked.")
    budget: float | None = Field(default=None, ge=0, description="Maximum total value per actor, rolling 24 hours.")
    when: str | None = Field(default=None, description="CEL condition over tool, args, actor, domain, value, target, context, now.")
    effect: Literal["block", "require_approval"] | None = Field(
        default=None, description="What a true `when` (or, without `when`, any match) does. Default block."
    )
    status: Literal["active", "paused", "shadow"] = "active"
    approval_ttl: Duration | None = Field(default=None, description="How long an approval stays open, e.g. '24h'.")
    approvals_required: int = Field(default=1, ge=1, le=10)
    risk: RiskPolicy | None = Field(default=None, description="Risk thresholds for the calls this rule selects.")
    clamp: dict[str, Clamp] | None = Field(
        default=None, description="Constrained allow: numeric arguments kept within {min, max} (the call runs patched; "
                                  "the patched call is judged by every rule)."
    )  # fmt: skip
    override: dict[str, Any] | None = Field(
        default=None, description="Constrained allow: arguments set to these values (the call runs patched)."
    )

    @field_validator("actors", "allow_actors", "deny_actors", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("approval_ttl", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> Any:
        if isinstance(v, str) and v.startswith("P"):
            return v  # ISO 8601, as stored policies write it; pydantic parses it
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"min_value {self.min_value:g} is above max_value {self.max_value:g}")
        if self.effect is not None and self.when is None and self._has_limits():
            raise ValueError("effect applies to `when` (or to a rule without limits); this rule has limits")
        if self.patches and (self._has_limits() or self.effect is not None or self.risk is not None):
            raise ValueError("a rule with clamp or override patches calls (its `when`, if any, says which); "
                             "limits, effect and risk belong in another rule")  # fmt: skip
        if self.clamp is not None and self.override is not None and set(self.clamp) & set(self.override):
            raise ValueError(f"arguments {sorted(set(self.clamp) & set(self.override))} are both clamped and overridden")
        return self

    @property
    def patches(self) -> bool:
        """Whether this rule is a constrained allow (``clamp``, ``override``)."""
        return bool(self.clamp) or bool(self.override)

    def _has_limits(self) -> bool:
        names = ("max_value", "min_value", "require_approval_above", "max_per_hour", "max_per_day",
                 "cooldown_seconds", "allowed_hours", "allow_actors", "deny_actors", "budget")  # fmt: skip
        return any(getattr(self, n) is not None for n in names)

    def content_digest(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json", exclude_none=True)).encode()).hexdigest()


class RuleFile(_Strict):
    """The rules file: ``version`` is the file format, not the policy version."""

    version: Literal[1] = 1
    risk: RiskPolicy | None = Field(default=None, description="Default risk thresholds for every call.")
    costs: CostPolicy | None = Field(
        default=None, description="What outcomes cost: memory's risk then becomes a verdict by expected cost."
    )
    domains: dict[str, DomainPolicy] = Field(default_factory=dict, description="Settings per domain (exact names).")
    redaction: RedactionSettings | None = Field(
        default=None, description="More secrets to redact from the record (argument names, patterns)."
    )
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleFile:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule id {r.id!r} appears more than once")
            seen.add(r.id)
        return self


def glob_matcher(patterns: str | Sequence[str]) -> Callable[[str], bool]:
    """``fnmatchcase`` against one pattern or any of several, compiled once: a set lookup when
    no pattern has a wildcard, else one regular expression."""
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    if not any(ch in p for p in pats for ch in "*?["):
        return frozenset(pats).__contains__
    regex = re.compile("|".join(fnmatch.translate(p) for p in pats))
    return lambda name: regex.match(name) is not None


def _anything(_name: str) -> bool:
    return True


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    version: int
    condition: Condition | None
    hours: tuple[time, time, ZoneInfo] | None
    # Derived once from ``rule``: selector and actor-list matchers, and whether it counts calls.
    domain_matches: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    tool_matches: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    actor_matches: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    denied: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)
    allowed: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)
    counts: bool = field(init=False, repr=False, compare=False)
    patches: bool = field(init=False, repr=False, compare=False)  # a constrained allow (clamp, override)

    def __post_init__(self) -> None:
        r, put = self.rule, object.__setattr__
        put(self, "domain_matches", _anything if r.domain is None else glob_matcher(r.domain))
        put(self, "tool_matches", _anything if r.tool is None else glob_matcher(r.tool))
        put(self, "actor_matches", _anything if r.actors is None else glob_matcher(r.actors))
        put(self, "denied", None if r.deny_actors is None else glob_matcher(r.deny_actors))
        put(self, "allowed", None if r.allow_actors is None else glob_matcher(r.allow_actors))
        put(self, "counts", any(v is not None for v in (r.max_per_hour, r.max_per_day, r.budget, r.cooldown_seconds)))
        put(self, "patches", r.patches)

    @property
    def id(self) -> str:
        return self.rule.id


def remember(memo: dict[Any, Any], key: Any, value: Any, limit: int = 65_536) -> None:
    """Keep ``value`` in a memo whose keys are names callers choose (a rule set's, the server's
    metric label sets): bounded, the oldest entry making room for the newest, so that a busy
    deployment's many (domain, tool, actor) never empty it at once."""
    if len(memo) >= limit:
        del memo[next(iter(memo))]
    memo[key] = value


def _exact_names(patterns: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The names a selector matches when it has no wildcard, else None."""
    if patterns is None:
        return None
    pats = [patterns] if isinstance(patterns, str) else list(patterns)
    return None if any(ch in p for p in pats for ch in "*?[") else tuple(pats)


@dataclass(frozen=True)
class RuleSet:
    """Rules ready to evaluate, with the policy version decisions are stamped with."""

    rules: tuple[CompiledRule, ...]
    policy_version: str
    source: RuleFile = field(default_factory=RuleFile)
    # (domain, tool) -> the rules that are not paused and whose domain and tool selectors match.
    _candidates: dict[tuple[str, str], tuple[CompiledRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # (domain, tool, actor) -> its ResolvedRisk (clearance.policy.risk), which these rules fix.
    _risk: dict[tuple[str, str, str], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def candidates(self, domain: str, tool: str) -> tuple[CompiledRule, ...]:
        """The rules that may apply to a call of ``tool`` in ``domain``, in file order (actor
        selectors still to be checked). Memoised: calls repeat the same few tools; a pair not
        seen yet is looked up in :attr:`_index`, so a tool no rule names costs no scan."""
        key = (domain, tool)
        found = self._candidates.get(key)
        if found is None:
            by_tool, by_domain, rest = self._index
            positions = sorted({*by_tool.get(tool, ()), *by_domain.get(domain, ()), *rest})
            rules = self.rules
            found = tuple(r for r in (rules[i] for i in positions) if r.domain_matches(domain) and r.tool_matches(tool))
            remember(self._candidates, key, found)
        return found

    @cached_property
    def _index(self) -> tuple[dict[str, list[int]], dict[str, list[int]], list[int]]:
        """Positions of the rules that are not paused: by tool name for those whose tool
        selector names tools exactly; by domain name for the others whose domain selector names
        domains exactly; the rest (wildcards both ways) in a list every lookup checks."""
        by_tool: dict[str, list[int]] = {}
        by_domain: dict[str, list[int]] = {}
        rest: list[int] = []
        for i, compiled in enumerate(self.rules):
            rule = compiled.rule
            if rule.status == "paused":
                continue
            if (tools := _exact_names(rule.tool)) is not None:
                for name in tools:
                    by_tool.setdefault(name, []).append(i)
            elif (domains := _exact_names(rule.domain)) is not None:
                for name in domains:
                    by_domain.setdefault(name, []).append(i)
            else:
                rest.append(i)
        return by_tool, by_domain, rest

    @classmethod
    def empty(cls) -> RuleSet:
        return cls(rules=(), policy_version="0")

    @classmethod
    def compile(cls, source: RuleFile, policy_version: str, versions: dict[str, int] | None = None) -> RuleSet:
        compiled = []
        for rule in source.rules:
            condition = compile_condition(rule.when, rule.id) if rule.when is not None else None
            hours = None
            if rule.allowed_hours is not None:
                ah = rule.allowed_hours
                hours = (_parse_clock(ah.start), _parse_clock(ah.end), ZoneInfo(ah.tz))
            compiled.append(CompiledRule(rule, (versions or {}).get(rule.id, 1), condition, hours))
        rule_set = cls(rules=tuple(compiled), policy_version=policy_version, source=source)
        rule_set._index  # built now, not on the first call
        return rule_set

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.source.model_dump(mode="json", exclude_none=True)).encode()).hexdigest()


def _format_validation(exc: ValidationError, data: Any) -> str:
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        where = ""
        for part in loc:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            try:
                rid = data["rules"][loc[1]].get("id")
            except (KeyError, IndexError, TypeError, AttributeError):
                rid = None
            if rid:
                where = f"rule {rid!r} ({where})"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        lines.append(f"{where or 'file'}: {message}")
    return "; ".join(lines)


def parse_rules(text: str, *, origin: str = "<rules>") -> RuleFile:
    """Validate a rules document; raises :class:`RuleError` naming each problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleError(f"{origin}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleError(f"{origin}: expected a mapping with `version` and `rules`, got {type(data).__name__}")
    try:
        source = RuleFile.model_validate(data)
    except ValidationError as exc:
        raise RuleError(f"{origin}: {_format_validation(exc, data)}") from None
    # Compile conditions now, so that a bad expression fails at load, not on the first call.
    RuleSet.compile(source, policy_version="check")
    return source


def load_rules(path: str | Path) -> RuleFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"cannot read rules file {str(p)!r}: {exc.strerror}") from None
    return parse_rules(text, origin=str(p))


def rules_json_schema() -> dict[str, Any]:
    """JSON Schema of the rules file, for editors (yaml-language-server) and CI checks."""
    schema = RuleFile.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "clearance rules file"
    # The loader also takes a single name where a list is expected (`actors: agent-1`).
    rule = schema["$defs"]["Rule"]["properties"]
    for name in ("actors", "allow_actors", "deny_actors"):
        rule[name]["anyOf"].insert(0, {"type": "string"})
    return schema
