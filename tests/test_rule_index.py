"""Rule selection by index (``RuleSet.candidates``): the same rules, in file order, as checking
every rule's selectors, without checking the rules that name other tools or domains; and a memo
that stays bounded without ever emptying itself."""

from __future__ import annotations

import random

from clearance.policy import RuleFile
from clearance.policy.rules import RuleSet, remember

TOOLS = ["pay", "refund", "send_email", "search", "deploy"]
DOMAINS = ["payments", "comms", "ops"]


def _selector(rng: random.Random, names: list[str]) -> str | None:
    roll = rng.random()
    if roll < 0.3:
        return None
    if roll < 0.45:
        return rng.choice(["*", names[0][:2] + "*", "?" + names[1][1:], "[ps]*"])
    return rng.choice([*names, "unknown-" + names[0]])


def _rule_set(rng: random.Random, n: int) -> RuleSet:
    rules = []
    for i in range(n):
        rule: dict[str, object] = {"id": f"r{i}", "max_value": 10}
        if (tool := _selector(rng, TOOLS)) is not None:
            rule["tool"] = tool
        if (domain := _selector(rng, DOMAINS)) is not None:
            rule["domain"] = domain
        if rng.random() < 0.15:
            rule["status"] = "paused"
        elif rng.random() < 0.15:
            rule["status"] = "shadow"
        rules.append(rule)
    return RuleSet.compile(RuleFile.model_validate({"version": 1, "rules": rules}), "1")


def test_candidates_are_the_rules_whose_selectors_match_in_file_order() -> None:
    rng = random.Random(21)
    for _ in range(30):
        rules = _rule_set(rng, rng.randrange(0, 40))
        for domain in [*DOMAINS, "elsewhere", "pa"]:
            for tool in [*TOOLS, "never-seen", "sx", "p"]:
                expected = tuple(r for r in rules.rules if r.rule.status != "paused" and r.domain_matches(domain)
                                 and r.tool_matches(tool))  # fmt: skip
                assert rules.candidates(domain, tool) == expected, (domain, tool)
                assert rules.candidates(domain, tool) == expected  # memoised: the same again


def test_a_tool_no_rule_names_checks_only_the_rules_with_wildcards() -> None:
    """A thousand rules naming their tools, two with wildcards: a call of a tool none of them
    names checks the selectors of those two, not the thousand."""
    listed = [{"id": f"t{i}", "tool": f"tool_{i}", "max_value": 10} for i in range(1000)]
    wild = [{"id": "any-payments", "domain": "payments", "max_value": 5}, {"id": "all-send", "tool": "send_*", "max_value": 5}]
    rules = RuleSet.compile(RuleFile.model_validate({"version": 1, "rules": [*listed[:500], *wild, *listed[500:]]}), "1")
    checked: list[str] = []
    for compiled in rules.rules:
        original = compiled.tool_matches
        object.__setattr__(compiled, "tool_matches", lambda name, f=original, i=compiled.id: checked.append(i) or f(name))
    assert [r.id for r in rules.candidates("payments", "brand_new_tool")] == ["any-payments"]
    assert [r.id for r in rules.candidates("comms", "send_fax")] == ["all-send"]
    assert [r.id for r in rules.candidates("payments", "tool_7")] == ["t7", "any-payments"]
    assert len(checked) <= 6, checked


def test_the_memo_keeps_its_newest_entries_when_full() -> None:
    memo: dict[str, int] = {}
    for i in range(5):
        remember(memo, f"k{i}", i, limit=3)
    assert memo == {"k2": 2, "k3": 3, "k4": 4}  # the oldest made room, one at a time


def test_many_pairs_do_not_empty_the_candidate_memo() -> None:
    rules = RuleSet.compile(RuleFile.model_validate({"version": 1, "rules": [{"id": "a", "tool": "pay", "max_value": 1}]}), "1")
    for i in range(5000):
        rules.candidates(f"domain-{i}", "pay")
    assert len(rules._candidates) == 5000  # a memo emptied at 4,096 pairs would hold 904
