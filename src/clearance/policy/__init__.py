"""Rules, their loading from YAML and their evaluation; no I/O beyond reading a rules file."""

from clearance.policy.evaluate import Usage, UsageLookup, Verdict, evaluate, selector_matches, usage_lookups
from clearance.policy.rules import (
    AllowedHours,
    CompiledRule,
    Rule,
    RuleFile,
    RuleSet,
    load_rules,
    parse_rules,
    rules_json_schema,
)

__all__ = [
    "AllowedHours",
    "CompiledRule",
    "Rule",
    "RuleFile",
    "RuleSet",
    "Usage",
    "UsageLookup",
    "Verdict",
    "evaluate",
    "load_rules",
    "parse_rules",
    "rules_json_schema",
    "selector_matches",
    "usage_lookups",
]
