"""Costs instead of thresholds, and what memory estimates about its own evidence (issue 15):
the reviewer's reliability and the share of wrong outcome reports."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from clearance import Engine, parse_rules
from clearance.errors import RuleError
from clearance.memory import RiskEstimate
from clearance.memory.reliability import NoiseModel, ReviewerModel, cheapest
from clearance.model import Action, DecisionResult
from clearance.policy import RuleSet
from clearance.policy.evaluate import Verdict
from clearance.policy.risk import apply_risk, resolve_risk
from memory_support import record_if_ran


def test_cheapest_verdict_follows_the_costs() -> None:
    # A review (2) beats allowing once p x harm x catch passes it; blocking wins only when a
    # refusal is cheap next to what the reviewer would miss.
    assert cheapest(0.01, 100, 10, 2, 0.9, 0.05)[0] == "allowed"
    assert cheapest(0.1, 100, 10, 2, 0.9, 0.05)[0] == "requires_approval"
    assert cheapest(0.9, 100, 10, 2, 0.9, 0.05)[0] == "blocked"
    # A reviewer who catches nothing is never worth asking.
    assert cheapest(0.1, 100, 10, 2, 0.0, 0.0)[0] != "requires_approval"
    # A free review of a perfect reviewer always beats allowing a risky call.
    verdict, costs = cheapest(0.5, 100, 1000, 0, 1.0, 0.0)
    assert verdict == "requires_approval" and costs["requires_approval"] == 0


def test_reviewer_model_learns_catch_and_false_rejection_rates() -> None:
    rng = random.Random(5)
    model = ReviewerModel()
    for _ in range(3000):
        bad = rng.random() < 0.3
        p = 0.6 if bad else 0.1  # memory's (informative, imperfect) risk
        if rng.random() < (0.95 if bad else 0.02):
            model.rejected(p)
        else:
            model.approved_then(float(bad))
    assert model.catch == pytest.approx(0.95, abs=0.04)
    assert model.false_reject == pytest.approx(0.02, abs=0.03)


def test_a_rejection_is_read_with_its_own_kinds_rejection_rate() -> None:
    """Reads a person rejects only at the reviewer's false-rejection rate are not made bad by
    the transfers that are rejected far more often (issue 15: wrongly refused reads used to
    count as harm, raising the reads' risk, which sent more of them to a person)."""
    rng = random.Random(3)
    model = ReviewerModel()
    for _ in range(400):
        model.answered(rng.random() < 0.6, "send_money")  # mostly bad: rejected often
        model.answered(rng.random() < 0.1, "get_balance")  # good: refused at about f
    assert model.asked_bad("send_money") > 0.5
    assert model.asked_bad("get_balance") < 0.05
    assert model.asked_bad("never_asked") == pytest.approx(0.01)  # no rejection of its own yet
    # What a rejection of a read of low risk then says: weak evidence of harm, not strong.
    assert model.bad_if_rejected(max(0.02, model.asked_bad("get_balance"))) < 0.3
    assert model.bad_if_rejected(max(0.02, model.asked_bad("send_money"))) > 0.8


def test_noise_model_estimates_the_share_of_wrong_reports() -> None:
    rng = random.Random(9)
    model = NoiseModel()
    assert model.rate == pytest.approx(0.01)  # the prior before any report
    for _ in range(4000):
        key = rng.randrange(60)
        truly = key < 15  # a quarter of the kinds of call always go badly
        model.add(key, float(truly != (rng.random() < 0.07)))
    # It errs low (the least mixed half of the groups is partly so by chance): under-correcting
    # leaves risk a little high, the safe side.
    assert 0.04 <= model.rate <= 0.08, model.rate


def _policy(text: str, **action: object) -> tuple[RuleSet, Action]:
    rules = RuleSet.compile(parse_rules(text), "1")
    return rules, Action(tool="send_money", domain="banking", actor="a", **action)  # type: ignore[arg-type]


COSTS = "version: 1\nrules: []\ncosts: {harm: 100, harm_per_value: 1, refused: 10, review: 2}\n"


def test_costs_replace_the_default_thresholds() -> None:
    rules, action = _policy(COSTS)
    policy = resolve_risk(rules, action)
    assert policy.costs is not None and policy.approval_above is None and policy.block_above is None
    allowed = Verdict(DecisionResult.allowed, "", [], [], [], None, 1)
    def verdict(risk: float, stake: float | None = None, lo: float | None = None) -> DecisionResult:
        est = RiskEstimate(risk=risk, evidence=5.0, precedents=[], stake=stake, reviewer_catch=0.9,
                           reviewer_false_reject=0.05, risk_lo=lo)
        return apply_risk(allowed, est, policy).result
    assert verdict(0.01) is DecisionResult.allowed
    assert verdict(0.1) is DecisionResult.requires_approval  # under the old default of 0.5
    assert verdict(0.0003, stake=5000) is DecisionResult.allowed
    assert verdict(0.01, stake=5000) is DecisionResult.requires_approval  # 1% of 5,100 at stake
    assert verdict(0.95) is DecisionResult.blocked
    # Unsure whether to block (the risk could well be low): a person is asked, whose answer is
    # evidence, unless the sum at stake makes asking dearer than anything knowing could save.
    assert verdict(0.5, lo=0.01) is DecisionResult.requires_approval
    assert verdict(0.5, stake=5000, lo=0.01) is DecisionResult.blocked


def test_explicit_thresholds_still_apply_with_costs_and_without() -> None:
    rules, action = _policy(COSTS.replace("rules: []", "rules: []\nrisk: {approval_above: 0.005}"))
    assert resolve_risk(rules, action).approval_above == 0.005
    rules, action = _policy("version: 1\nrules: []\n")
    policy = resolve_risk(rules, action)
    assert policy.costs is None and policy.approval_above == 0.5 and policy.block_above == 0.9
    rules, action = _policy(COSTS.replace("costs: {", "domains: {banking: {costs: {review: 50}}}\ncosts: {"))
    assert resolve_risk(rules, action).costs.review == 50  # type: ignore[union-attr]


def test_costs_are_validated() -> None:
    with pytest.raises(RuleError, match="review"):
        parse_rules("version: 1\nrules: []\ncosts: {review: -1}\n")
    with pytest.raises(RuleError, match="thresholds"):
        parse_rules("version: 1\nrules: []\ncosts: {thresholds: 1}\n")


def test_engine_with_costs_learns_when_asking_pays(tmp_path) -> None:
    """With costs declared and no threshold: payments to an IBAN that goes badly are sent to a
    person once memory has seen it, and routine ones stay allowed."""
    now = [datetime(2026, 3, 2, 9, tzinfo=timezone.utc)]
    engine = Engine(tmp_path / "c.db", clock=lambda: now[0])
    engine.apply_rules(parse_rules(COSTS))
    def send(iban: str) -> dict:
        return {"tool": "send_money", "domain": "banking", "actor": "a", "value": 50, "arguments": {"to": iban}}
    for i in range(40):
        now[0] += timedelta(minutes=5)
        bad = i % 4 == 0
        d = engine.evaluate(send("NL91ABNA0417164300" if bad else "DE89370400440532013000"))
        if d.allowed:
            record_if_ran(engine, d)
            engine.report_outcome(d.request_id, "harmful" if bad else "succeeded", cost=150.0 if bad else 0.0)
        elif d.requires_approval:  # the person catches the bad ones; an approved call runs
            engine.resolve_approval(d.approval_id, "rejected" if bad else "approved", approver="p")
            if not bad:
                record_if_ran(engine, d)
                engine.report_outcome(d.request_id, "succeeded")
    assert engine.evaluate(send("DE89370400440532013000")).allowed
    risky = engine.evaluate(send("NL91ABNA0417164300"))
    assert not risky.allowed and "costs" in (risky.reason or ""), risky.reason
    engine.close()


def test_a_new_tool_starts_from_its_familys_rate(tmp_path) -> None:
    """Reads went well and sends went badly: a tool never seen before starts from what tools
    named with the same verb showed, not from the deployment's mixed rate."""
    from clearance.memory.cases import CaseMemory

    now = [datetime(2026, 3, 2, 9, tzinfo=timezone.utc)]
    engine = Engine(tmp_path / "f.db", clock=lambda: now[0], memory=CaseMemory())
    engine.apply_rules(parse_rules("version: 1\nrules: []\nrisk: {enabled: false, outcome_error_rate: 0}\n"))
    for i in range(60):
        now[0] += timedelta(minutes=5)
        tool = ("get_balance", "get_files", "send_money", "send_email")[i % 4]
        d = engine.evaluate({"tool": tool, "actor": "a", "arguments": {"n": i % 3}})
        record_if_ran(engine, d)
        engine.report_outcome(d.request_id, "harmful" if tool.startswith("send") else "succeeded")
    memory = engine.memory
    assert isinstance(memory, CaseMemory)
    assert memory.prior("get_calendar") < 0.1 < 0.5 < memory.prior("send_invite")
    engine.close()


def test_noise_model_is_not_fooled_by_twins_that_stop_running() -> None:
    """A memory that learns stops running the twins of a call reported bad, so only the groups
    whose reports came back good grow large. Counting groups of two as well keeps the estimate
    near the truth (the groups-of-four estimate read 0.048 for 0.08 here)."""
    rng = random.Random(4)
    model = NoiseModel()
    truth = 0.08
    for key in range(1500):  # harmless kinds of call, each run up to 2-6 times
        for _ in range(rng.randint(2, 6)):
            bad = rng.random() < truth
            model.add(key, float(bad))
            if bad:  # reported bad: its next twin is asked about, approved half the time, then no more
                if rng.random() < 0.5:
                    model.add(key, float(rng.random() < truth))
                break
    assert 0.065 <= model.rate <= 0.095, model.rate


def test_a_harmless_tools_unlucky_reports_do_not_make_it_risky() -> None:
    """Wrong reports of a harmless kind of call come in above their average for some kinds
    (6 of 44 where 0.06 x 44 = 2.6 are expected). The plain correction (subtract, clip at zero)
    calls that a 7% risk; the posterior weighs that the rate may well be nil."""
    from clearance.memory.cases import _posterior, _true_bad

    plain = (_true_bad(6, 44, 0.06) + 5 * 0.02) / (44 + 5)
    mean, lo = _posterior(6, 44, 0.02, 5, 0.06)
    assert plain > 0.07 and mean < 0.045 and lo < mean
    # Without wrong reports it is the Beta-binomial mean, and clear evidence still counts.
    assert _posterior(3, 10, 0.1, 2, 0.0)[0] == pytest.approx((3 + 0.2) / 12, abs=0.01)
    assert _posterior(9, 10, 0.05, 2, 0.05)[0] > 0.7


def test_a_blocked_family_is_asked_about_again(tmp_path) -> None:
    """Many read tools each called a few times, all blocked from the start (early reports made
    every call look risky): counted tool by tool none recurs enough to be worth a question;
    counted over the family of ``get_*`` tools they do."""
    from clearance.memory.cases import CaseMemory

    memory = CaseMemory()
    for i in range(60):
        memory._decisions[f"get_thing_{i % 30}"] += 1
    assert memory._recurrence("get_thing_3", 2.0) >= 30.0
    assert memory._recurrence("send_money", 2.0) == 0.0


def test_the_reviewers_answers_per_tool_survive_a_snapshot() -> None:
    """What a restart loads is what memory had learnt of each tool's rejections (they are one
    of the reviewer's slots, saved with the others)."""
    from clearance.memory import snapshot
    from clearance.memory.cases import CaseMemory

    memory = CaseMemory()
    memory.reviewer.answered(True, "send_money")
    memory.reviewer.answered(False, "get_balance")
    loaded = CaseMemory()
    snapshot.load(snapshot.dump(memory), loaded)
    assert loaded.reviewer.by_kind == {"send_money": [1.0, 1.0], "get_balance": [1.0, 0.0]}
    assert loaded.reviewer.asked_bad("send_money") == memory.reviewer.asked_bad("send_money")
