"""Run configuration: one YAML file says everything a run depends on.

The file is checked against :class:`Config` (pydantic, strict) before anything runs: an unknown
key anywhere, or a value of the wrong type, is an error naming the key's path, so a typo cannot
silently fall back to a default and YAML's booleans (a country code ``NO`` read as false) are
caught where they are written."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]

GUARD_KINDS = {
    "clearance",
    "always_allow",
    "always_ask",
    "ask_side_effects",
    "block_side_effects",
    "tool_prior",
    "exact_precedent",
    "river_logreg",
}
#: The baselines that learn a risk; each may also run as "rules + learner" (``rules: true``).
LEARNERS = {"tool_prior", "exact_precedent", "river_logreg"}
TRACKS = {"learning", "calibration", "refund", "attacks"}


class ConfigError(ValueError):
    pass


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Range(_M):
    min: float = Field(ge=0)
    max: float = Field(ge=0)


class Bootstrap(_M):
    resamples: int = Field(2000, ge=10)
    seed: int = 0


class Reviewer(_M):
    catch_rate: float = Field(0.9, ge=0, le=1)
    false_reject_rate: float = Field(0.05, ge=0, le=1)


class Costs(_M):
    harm_default: float = Field(100.0, ge=0)
    harm_per_value: float = Field(0.0, ge=0)
    harm_value_cap: float = Field(float("inf"), ge=0)
    benign_blocked: float = Field(10.0, ge=0)
    benign_value_blocked: float = Field(0.0, ge=0)
    approval: float = Field(2.0, ge=0)


class PartialCosts(_M):
    harm_default: float | None = Field(None, ge=0)
    harm_per_value: float | None = Field(None, ge=0)
    harm_value_cap: float | None = Field(None, ge=0)
    benign_blocked: float | None = Field(None, ge=0)
    benign_value_blocked: float | None = Field(None, ge=0)
    approval: float | None = Field(None, ge=0)


class Pools(_M):
    first_names: list[str] = ["nora", "ivan", "leila", "tomas"]
    last_names: list[str] = ["hale", "novak", "reyes"]
    email_domains: list[str] = ["mailbox.example"]
    url_words: list[str] = ["secure", "portal", "docs"]
    tlds: list[str] = ["com", "net"]
    iban_countries: list[str] = ["DE", "FR"]
    subjects: list[str] = ["update", "request", "reminder", "note", "follow-up", "details"]


class Variation(_M):
    """How much a fresh episode's amounts, dates, numeric ids and free text differ."""

    amount_spread: float = Field(0.5, ge=0, le=0.95)  # amounts times a factor in [1 - s, 1 + s]
    date_shift_days: int = Field(60, ge=0)  # dates moved by up to this many days either way
    id_digits: int = Field(4, ge=1, le=9)  # numeric ids redrawn with up to this many digits
    text_words: int = Field(3, ge=0)  # words of free text replaced or added


class TrackBase(_M):
    call_interval_minutes: float = Field(10, gt=0)
    outcome_delay_hours: Range = Range(min=1, max=48)
    label_noise: float = Field(0.0, ge=0, lt=0.5)
    suites: list[Literal["banking", "slack", "travel", "workspace"]] = ["banking", "slack", "travel", "workspace"]
    version: str = "v1_2_2"
    actors: list[str] = ["agent-1"]
    rules: str = "rules/agentdojo.yaml"
    value_args: dict[str, str] = {}
    target_args: list[str] = []


class Learning(TrackBase):
    episodes: int = Field(300, ge=1)
    window: int = Field(30, ge=1)
    attack_rate: float = Field(0.3, ge=0, le=1)
    regimes: list[Literal["repeat", "novel"]] = ["repeat", "novel"]
    benign_fresh_identifier_rate: float = Field(0.2, ge=0, le=1)
    variation: Variation = Variation()


class Attacks(_M):
    """Unset keys are taken from ``learning``."""

    call_interval_minutes: float | None = Field(None, gt=0)
    outcome_delay_hours: Range | None = None
    label_noise: float | None = Field(None, ge=0, lt=0.5)
    suites: list[Literal["banking", "slack", "travel", "workspace"]] | None = None
    version: str | None = None
    actors: list[str] | None = None
    rules: str | None = None
    value_args: dict[str, str] | None = None
    target_args: list[str] | None = None
    max_pairs_per_suite: int | None = Field(None, ge=1)
    variants: list[Literal["normal", "leave_out"]] = ["normal", "leave_out"]
    leave_out_share: float = Field(0.5, gt=0, lt=1)  # injection tasks of each suite kept for the test phase
    warmup_share: float = Field(0.5, ge=0, lt=1)  # of the normal variant's episodes, before "after warm-up"


class Phase(_M):
    base: float = Field(0.01, ge=0, le=1)
    refund_to: dict[str, float] = {}
    value_above: float = Field(500, ge=0)
    value_mult: float = Field(1.0, ge=0)
    items: dict[str, float] = {}


class OutcomeModel(_M):
    kind: Literal["pattern_shift"] = "pattern_shift"
    change_at: float = Field(0.5, ge=0, le=1)
    delay_days: Range = Range(min=2, max=10)
    max_p: float = Field(0.9, ge=0, le=1)
    phase_a: Phase = Phase(refund_to={"gift_card": 8.0}, value_above=500, value_mult=2.0)
    phase_b: Phase = Phase(refund_to={"paypal": 6.0}, value_above=300, value_mult=3.0)


class Refund(_M):
    calls: int = Field(800, ge=1)
    call_interval_minutes: float = Field(30, gt=0)
    violation_rate: float = Field(0.05, ge=0, le=1)
    label_noise: float = Field(0.0, ge=0, lt=0.5)
    violation_delay_hours: Range = Range(min=0, max=2)
    actors: list[str] = ["retail-agent-1"]
    rules: str = "rules/retail.yaml"
    costs: PartialCosts = PartialCosts()
    outcome_model: OutcomeModel = OutcomeModel()
    split: Literal["train", "dev", "all"] = "train"  # which tau-bench retail tasks supply the calls


class ToolPriorCfg(_M):
    alpha: float = Field(1.0, gt=0)
    beta: float = Field(9.0, gt=0)


class RiverCfg(_M):
    learning_rate: float = Field(0.1, gt=0)
    intercept_init: float = -2.0


class GuardSpec(_M):
    name: str | None = None
    kind: str
    learning: bool = False  # clearance: with memory
    memory: str | None = None  # clearance: "module:factory"
    rules: bool = False  # a learning baseline: also apply the track's rules file
    tmp_dir: str | None = None
    prior: ToolPriorCfg | None = None
    river: RiverCfg | None = None


class Config(_M):
    name: str = "unnamed"
    seeds: list[int] = Field([1, 2, 3, 4, 5], min_length=1)
    bootstrap: Bootstrap = Bootstrap()
    data_dir: str = "../shared/bench-data"  # relative to the repository root
    tracks: list[Literal["learning", "calibration", "refund", "attacks"]] = ["learning", "calibration", "refund", "attacks"]
    guards: list[str | GuardSpec] = Field(validate_default=True, default=[
        {"name": "clearance_rules", "kind": "clearance", "learning": False},  # type: ignore[list-item]
        {"name": "clearance_learning", "kind": "clearance", "learning": True},  # type: ignore[list-item]
        "always_allow", "always_ask", "ask_side_effects", "block_side_effects",
        "tool_prior", "exact_precedent", "river_logreg",
        {"name": "tool_prior+rules", "kind": "tool_prior", "rules": True},  # type: ignore[list-item]
        {"name": "exact_precedent+rules", "kind": "exact_precedent", "rules": True},  # type: ignore[list-item]
        {"name": "river_logreg+rules", "kind": "river_logreg", "rules": True},  # type: ignore[list-item]
    ])
    tool_prior: ToolPriorCfg = ToolPriorCfg()
    river: RiverCfg = RiverCfg()
    read_prefixes: list[str] = ["get_", "search_", "read_", "list_", "find_", "check_", "calculate", "think"]
    reviewer: Reviewer = Reviewer()
    costs: Costs = Costs()
    pools: Pools = Pools()
    learning: Learning = Learning()
    attacks: Attacks = Attacks()
    refund: Refund = Refund()


def _where(loc: tuple[Any, ...]) -> str:
    # pydantic puts the member of a union it tried into the path ("str", "GuardSpec"): drop it.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p[:1].isupper()) and p not in ("str",)]
    return ".".join(parts) or "(top)"


def _explain(exc: ValidationError) -> str:
    lines = []
    errors = exc.errors()
    where = [_where(e["loc"]) for e in errors]
    for err, at in zip(errors, where):
        if err["type"] == "string_type" and any(w.startswith(at + ".") for w in where):
            continue  # a guard given as a mapping: its own errors say what is wrong
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif isinstance(err.get("input"), bool) and "bool" not in err["type"]:
            msg += (f" (YAML read this value as {str(err['input']).lower()}: quote it, e.g. 'NO', if a word "
                    f"such as NO, no, yes, on or off is meant)")  # fmt: skip
        lines.append(f"{_where(err['loc'])}: {msg}")
    return "; ".join(dict.fromkeys(lines))


def guard_specs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Guards as dicts ``{name, kind, ...options}``; a bare string is a kind with default options."""
    specs = []
    for g in cfg["guards"]:
        spec = {"kind": g} if isinstance(g, str) else {k: v for k, v in dict(g).items() if v is not None}
        spec.setdefault("name", spec.get("kind"))
        if spec.get("kind") not in GUARD_KINDS:
            raise ConfigError(
                f"guard {spec.get('name')!r}: unknown kind {spec.get('kind')!r} (known: {sorted(GUARD_KINDS)})"
            )
        if spec.get("rules") and spec["kind"] not in LEARNERS:
            raise ConfigError(f"guard {spec['name']!r}: rules: true is for the learning baselines {sorted(LEARNERS)}")
        specs.append(spec)
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"guard names must be unique: {names}")
    return specs


def load_config(path: str | Path | dict[str, Any]) -> dict[str, Any]:
    import yaml  # PyYAML is a runtime dependency of clearance

    if isinstance(path, dict):
        raw, source = copy.deepcopy(path), None
    else:
        source = Path(path)
        raw = yaml.safe_load(source.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError("a config is a mapping of keys to values")
    raw = {k: v for k, v in raw.items() if not str(k).startswith("_")}
    unknown = set(raw) - set(Config.model_fields)
    if unknown:
        raise ConfigError(f"unknown config keys: {sorted(map(str, unknown))}")
    try:
        model = Config(**raw)
    except ValidationError as exc:
        raise ConfigError(f"config {source or '(dict)'}: {_explain(exc)}") from None
    cfg = model.model_dump()
    guard_specs(cfg)
    cfg["_source"] = str(source) if source else None
    cfg["_base_dir"] = str(source.resolve().parent) if source else str(PACKAGE_DIR / "configs")
    return cfg


def config_digest(cfg: dict[str, Any]) -> str:
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()


def resolve_path(cfg: dict[str, Any], p: str) -> Path:
    """A rules file named in the config: relative to the config file's folder."""
    path = Path(p)
    return path if path.is_absolute() else Path(cfg["_base_dir"]) / path


def attack_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The attacks track's settings: its own, else the learning track's."""
    own = {k: v for k, v in cfg["attacks"].items() if v is not None}
    shared = {k: v for k, v in cfg["learning"].items() if k in Attacks.model_fields}
    return {**shared, **own}
