"""Run configuration: one YAML file says everything a run depends on."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[1]

DEFAULTS: dict[str, Any] = {
    "name": "unnamed",
    "seeds": [1, 2, 3, 4, 5],
    "bootstrap": {"resamples": 2000, "seed": 0},
    "data_dir": "../shared/bench-data",  # relative to the repository root
    "tracks": ["learning", "calibration", "refund", "attacks"],
    "guards": [
        "clearance",
        "always_allow",
        "always_ask",
        "block_side_effects",
        "tool_prior",
        "exact_precedent",
        "river_logreg",
    ],
    "thresholds": {"approval_above": 0.3, "block_above": 0.7},
    "tool_prior": {"alpha": 1.0, "beta": 9.0},
    "river": {"learning_rate": 0.1, "intercept_init": -2.0},
    "read_prefixes": [
        "get_",
        "search_",
        "read_",
        "list_",
        "find_",
        "check_",
        "calculate",
        "think",
    ],
    "reviewer": {"catch_rate": 0.9, "false_reject_rate": 0.05},
    "costs": {
        "harm_default": 100.0,
        "harm_per_value": 0.0,
        "harm_value_cap": float("inf"),
        "benign_blocked": 10.0,
        "benign_value_blocked": 0.0,
        "approval": 2.0,
    },
    "pools": {},
    "learning": {},
    "attacks": {},
    "refund": {},
}

GUARD_KINDS = {
    "clearance",
    "always_allow",
    "always_ask",
    "block_side_effects",
    "tool_prior",
    "exact_precedent",
    "river_logreg",
}
TRACKS = {"learning", "calibration", "refund", "attacks"}


class ConfigError(ValueError):
    pass


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            _merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def guard_specs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Guards as dicts ``{name, kind, ...options}``; a bare string is a kind with default options."""
    specs = []
    for g in cfg["guards"]:
        spec = {"kind": g} if isinstance(g, str) else dict(g)
        spec.setdefault("name", spec.get("kind"))
        if spec.get("kind") not in GUARD_KINDS:
            raise ConfigError(
                f"guard {spec.get('name')!r}: unknown kind {spec.get('kind')!r} (known: {sorted(GUARD_KINDS)})"
            )
        specs.append(spec)
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"guard names must be unique: {names}")
    return specs


def load_config(path: str | Path | dict[str, Any]) -> dict[str, Any]:
    import yaml  # PyYAML is a runtime dependency of clearance

    if isinstance(path, dict):
        raw, source = path, None
    else:
        source = Path(path)
        raw = yaml.safe_load(source.read_text()) or {}
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config keys: {sorted(unknown)}")
    cfg = _merge(DEFAULTS, raw)
    if not cfg["seeds"] or len(cfg["seeds"]) < 1:
        raise ConfigError("seeds: give at least one seed (five or more for intervals)")
    bad = set(cfg["tracks"]) - TRACKS
    if bad:
        raise ConfigError(f"unknown tracks {sorted(bad)} (known: {sorted(TRACKS)})")
    guard_specs(cfg)
    cfg["_source"] = str(source) if source else None
    cfg["_base_dir"] = (
        str(source.resolve().parent) if source else str(PACKAGE_DIR / "configs")
    )
    return cfg


def config_digest(cfg: dict[str, Any]) -> str:
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return hashlib.sha256(
        json.dumps(public, sort_keys=True, default=str).encode()
    ).hexdigest()


def resolve_path(cfg: dict[str, Any], p: str) -> Path:
    """A rules file named in the config: relative to the config file's folder."""
    path = Path(p)
    return path if path.is_absolute() else Path(cfg["_base_dir"]) / path
