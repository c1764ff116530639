"""Learning from outcomes: precedents, risk, thresholds, explanations, rebuilds.

Every test drives a real Engine on a SQLite file through evaluate / record / report / resolve,
the way an agent and its operators would, and checks what the next similar call gets.
"""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clearance import Engine, parse_rules
from clearance.errors import RuleError
from clearance.memory.cases import CaseMemory
from clearance.memory.features import identifiers
from clearance.memory.report import calibration
from clearance.model import Action, DecisionResult
from clearance.policy import RuleSet
from clearance.policy.risk import resolve_risk
from memory_support import record_if_ran

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
KNOWN = ["DE89370400440532013000", "FR1420041010050500013M02606", "GB29NWBK60161331926819"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_engine(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Engine]]:
    opened: list[Engine] = []

    def make(**kw: Any) -> Engine:
        eng = Engine(tmp_path / "memory.db", clock=clock, **kw)
        opened.append(eng)
        return eng

    yield make
    for eng in opened:
        eng.close()


def send(recipient: str, amount: float = 100.0, actor: str = "agent-1") -> dict[str, Any]:
    return {"tool": "send_money", "domain": "banking", "actor": actor, "value": amount,
            "arguments": {"recipient": recipient, "amount": amount}}  # fmt: skip


def fresh_iban(rng: random.Random) -> str:
    return f"LT{rng.randrange(10**17, 10**18)}"


def history(engine: Engine, clock: Clock, n: int = 60, seed: int = 1) -> None:
    """Known recipients go well; fresh IBANs (a novel attacker each time) are charged back. A
    reviewer rejects the attacks memory sends to approval and lets the rest run."""
    rng = random.Random(seed)
    for i in range(n):
        clock.tick(minutes=10)
        attack = i % 4 == 0
        d = engine.evaluate(send(fresh_iban(rng) if attack else rng.choice(KNOWN), rng.randint(50, 400)))
        if d.requires_approval:
            assert d.approval_id is not None
            engine.resolve_approval(d.approval_id, "rejected" if attack else "approved", approver="reviewer")
        if d.allowed or (d.requires_approval and not attack):
            record_if_ran(engine, d)
            engine.report_outcome(d.request_id, "harmful" if attack else "succeeded", cost=250.0 if attack else 0.0,
                                  severity=0.9 if attack else 0.0, event_id=f"out-{d.request_id}")  # fmt: skip


def test_novel_attacker_is_caught_by_what_past_ones_did(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    first = engine.evaluate(send(fresh_iban(random.Random(99))))
    assert first.allowed and first.precedents == [] and first.evidence == 0.0  # nothing learned yet
    history(engine, clock)
    clock.tick(minutes=5)
    novel = engine.evaluate(send(fresh_iban(random.Random(7)), 120))
    assert novel.result is not DecisionResult.allowed, novel.reason
    assert novel.rules_result is DecisionResult.allowed
    assert novel.risk_score > 0.5 and novel.evidence >= 2
    assert novel.precedents and all(p.tool == "send_money" for p in novel.precedents)
    assert sum(p.outcome in ("harmful", "rejected") for p in novel.precedents) >= 3, novel.reason
    assert any(p.outcome == "harmful" for p in novel.precedents)
    assert "most similar send_money calls to a new IBAN" in novel.reason and "(cost" in novel.reason
    assert "above approval_above" in novel.reason or "above block_above" in novel.reason
    cited = engine.get_decision(novel.precedents[0].request_id)
    assert cited.tool == "send_money"

    familiar = engine.evaluate(send(KNOWN[0], 120))
    assert familiar.allowed and familiar.risk_score < 0.1
    assert familiar.risk_summary and "went well" in familiar.risk_summary


def test_thin_evidence_stays_near_the_prior(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    d = engine.evaluate(send("LT111111111111111111"))
    record_if_ran(engine, d)
    engine.report_outcome(d.request_id, "harmful", cost=100.0)
    clock.tick(minutes=1)
    again = engine.evaluate(send("LT222222222222222222"))
    # One bad precedent is evidence of about one case: shrunk, below min_evidence, not acted on.
    assert again.allowed
    assert 0.2 < again.risk_score < 0.8 and again.evidence < 2.0
    assert [p.outcome for p in again.precedents] == ["harmful"]


def test_blocked_and_unanswered_calls_reveal_nothing(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    engine.apply_rules(parse_rules("version: 1\nrules:\n  - {id: big, tool: send_money, max_value: 1000,"
                                   " require_approval_above: 500}\n"))  # fmt: skip
    blocked = engine.evaluate(send("LT333333333333333333", 5000))
    waiting = engine.evaluate(send("LT444444444444444444", 700))
    assert blocked.result is DecisionResult.blocked and waiting.result is DecisionResult.requires_approval
    clock.tick(minutes=1)
    later = engine.evaluate(send("LT555555555555555555", 100))
    assert later.precedents == [] and later.evidence == 0.0  # neither counts as safe nor as harmful


def test_reviewers_answers_count_until_an_outcome_arrives(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    engine.apply_rules(parse_rules("version: 1\nrules:\n  - {id: ask, tool: send_money, require_approval_above: 0}\n"))
    held = engine.evaluate(send("LT666666666666666666"))
    engine.resolve_approval(held.approval_id, "rejected", approver="alice")  # type: ignore[arg-type]
    clock.tick(minutes=1)
    after_reject = engine.evaluate(send("LT777777777777777777"))
    assert [p.outcome for p in after_reject.precedents] == ["rejected"]
    # A person's no is weaker evidence than a reported harm: reviewers refuse some harmless calls.
    other = open_engine()
    other.apply_rules(parse_rules("version: 1\nrules:\n  - {id: ask, tool: send_money, require_approval_above: 0}\n"))
    harmed = other.evaluate(send("LT666666666666666666"))
    other.resolve_approval(harmed.approval_id, "approved", approver="alice")  # type: ignore[arg-type]
    record_if_ran(other, harmed)
    other.report_outcome(harmed.request_id, "harmful")
    clock.tick(minutes=1)
    after_harm = other.evaluate(send("LT777777777777777777"))
    assert 0.0 < after_reject.risk_score < after_harm.risk_score

    engine.resolve_approval(after_reject.approval_id, "approved", approver="alice")  # type: ignore[arg-type]
    record_if_ran(engine, after_reject)
    engine.report_outcome(after_reject.request_id, "succeeded")
    clock.tick(minutes=1)
    later = engine.evaluate(send("LT888888888888888888"))
    outcomes = {p.request_id: p.outcome for p in later.precedents}
    assert outcomes[after_reject.request_id] == "succeeded"  # the real outcome replaced the approval


def test_late_outcomes_update_the_estimate(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    ran = []
    for i in range(4):
        d = engine.evaluate(send(f"LT90000000000000000{i}"))
        record_if_ran(engine, d)
        ran.append(d.request_id)
    clock.tick(days=1)
    before = engine.evaluate(send("LT999999999999999999"))
    assert before.evidence == 0.0
    for rid in ran:  # charge-backs arrive days later
        engine.report_outcome(rid, "harmful", cost=80.0)
    clock.tick(days=1)
    after = engine.evaluate(send("LT999999999999999998"))
    assert after.risk_score > before.risk_score + 0.3 and after.evidence > 2.0
    # and a later "it was fine after all" does not erase a reported harm
    engine.report_outcome(ran[0], "succeeded")
    assert engine.evaluate(send("LT999999999999999997")).risk_score == pytest.approx(after.risk_score, abs=0.05)


def test_old_precedents_weigh_less(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    engine.apply_rules(parse_rules("version: 1\nrisk: {half_life_days: 7}\n"))
    for i in range(4):
        d = engine.evaluate(send(f"LT80000000000000000{i}"))
        record_if_ran(engine, d)
        engine.report_outcome(d.request_id, "harmful")
    fresh = engine.evaluate(send("LT800000000000000099"))
    clock.tick(days=28)  # four half-lives
    stale = engine.evaluate(send("LT800000000000000098"))
    assert stale.evidence < fresh.evidence / 8
    assert stale.risk_score < fresh.risk_score


def test_rebuilt_memory_judges_like_the_live_one(open_engine: Callable[..., Engine], clock: Clock) -> None:
    live = open_engine()
    history(live, clock, n=40)
    clock.tick(minutes=3)
    live.evaluate(send(fresh_iban(random.Random(5)), 222))
    rebuilt = open_engine()  # a new process on the same file: memory replays the audit log
    assert rebuilt.warm_memory() == live.warm_memory() > 0
    probe = Action.model_validate(send(fresh_iban(random.Random(6)), 230))
    first, second = live.memory.assess(probe, clock()), rebuilt.memory.assess(probe, clock())
    assert first.precedents and second == first


def test_engines_sharing_a_store_learn_from_each_other(open_engine: Callable[..., Engine], clock: Clock) -> None:
    a, b = open_engine(), open_engine()
    history(a, clock)
    clock.tick(minutes=3)
    d = b.evaluate(send(fresh_iban(random.Random(11))))
    # b decided nothing itself: all it knows of fresh IBANs going badly, it learned from a.
    assert d.risk_score > 0.4 and d.evidence > 2
    assert any(p.outcome == "harmful" for p in d.precedents)


def test_thresholds_per_domain_and_per_rule() -> None:
    source = parse_rules("""
version: 1
risk: {approval_above: 0.4, block_above: 0.8}
domains:
  banking: {risk: {approval_above: 0.2, min_evidence: 1}}
rules:
  - id: big-wires
    tool: wire_*
    risk: {block_above: 0.5, novel: require_approval}
  - id: paused
    tool: wire_*
    status: paused
    risk: {approval_above: 0.01}
""")
    rules = RuleSet.compile(source, "1")
    wire = resolve_risk(rules, Action(tool="wire_out", domain="banking"))
    assert (wire.approval_above, wire.block_above, wire.min_evidence, wire.novel) == (0.2, 0.5, 1.0, "require_approval")
    assert wire.source == "rule big-wires"
    mail = resolve_risk(rules, Action(tool="send_email", domain="mail"))
    assert (mail.approval_above, mail.block_above, mail.min_evidence, mail.novel) == (0.4, 0.8, 2.0, "allow")
    assert resolve_risk(RuleSet.empty(), Action(tool="x")).source == "defaults"


def test_bad_risk_thresholds_are_refused_with_the_rule_id() -> None:
    with pytest.raises(RuleError, match=r"rule 'r1'.*approval_above 0.9 is above block_above 0.5"):
        parse_rules("version: 1\nrules:\n  - {id: r1, tool: t, risk: {approval_above: 0.9, block_above: 0.5}}\n")
    with pytest.raises(RuleError, match="less than or equal to 1"):
        parse_rules("version: 1\nrisk: {approval_above: 1.5}\n")


def test_novel_calls_get_what_the_rules_file_says(open_engine: Callable[..., Engine], clock: Clock) -> None:
    engine = open_engine()
    engine.apply_rules(parse_rules("version: 1\nrisk: {novel: require_approval}\n"))
    for i in range(8):
        d = engine.evaluate({"tool": "post_message", "arguments": {"channel": "general", "text": f"hello {i}"}})
        record_if_ran(engine, d)
        engine.report_outcome(d.request_id, "succeeded")
    familiar = engine.evaluate({"tool": "post_message", "arguments": {"channel": "general", "text": "hello again"}})
    assert familiar.allowed
    odd = engine.evaluate({"tool": "post_message", "value": 25000.0, "target": "LT123456789012345678",
                           "arguments": {"iban": "LT123456789012345678", "url": "https://paste.example.io/x",
                                         "channel": "external-x", "text": "please wire " * 40}})  # fmt: skip
    assert odd.result is DecisionResult.requires_approval, odd.reason
    assert "novel calls get require approval" in odd.reason


def test_identifiers_generalise_beyond_exact_strings() -> None:
    ids = identifiers({"to": "Mallory <mallory@evil-mail.com>", "note": "see https://www.Pay-Me.io/now",
                       "iban": "LT601010012345678901", "user": "Bob"})  # fmt: skip
    assert ("email_domain", "evil-mail.com") in ids and ("host", "pay-me.io") in ids
    assert ("iban", "LT601010012345678901") in ids and ("party", "bob") in ids


def test_calibration_measures() -> None:
    assert calibration([])["brier"] is None
    perfect = calibration([(1.0, 1.0), (0.0, 0.0)] * 5)
    assert perfect["brier"] == 0 and perfect["ece"] == 0
    off = calibration([(0.9, 0.0)] * 10)
    assert off["ece"] == pytest.approx(0.9) and off["reliability"][0]["n"] == 10


def test_risk_is_calibrated_on_a_stream_with_known_odds(open_engine: Callable[..., Engine], clock: Clock) -> None:
    """Three kinds of call that go badly 2%, 20% and 60% of the time: the estimates land near
    those rates, and the Brier score beats always answering the base rate. The deployment knows
    its reports are exact (a call that goes badly 2% of the time would otherwise pass for a
    routine call whose reports are 2% wrong: the two cannot be told apart from reports alone)."""
    engine = open_engine(memory=CaseMemory())
    engine.apply_rules(parse_rules("version: 1\nrules: []\nrisk: {outcome_error_rate: 0}\n"))
    rng = random.Random(3)
    kinds = [("DE89370400440532013000", 0.02), ("ES9121000418450200051332", 0.2), ("NL91ABNA0417164300", 0.6)]
    for _ in range(450):
        clock.tick(minutes=5)
        iban, p = rng.choice(kinds)
        d = engine.evaluate(send(iban, 100))
        record_if_ran(engine, d)
        engine.report_outcome(d.request_id, "harmful" if rng.random() < p else "succeeded")
    report = engine.learning_report()
    c = report.calibration
    assert c["n"] == 450 and c["brier"] < c["brier_base_rate"]
    assert c["ece"] < 0.05, c
    for iban, p in kinds:
        est = engine.evaluate(send(iban, 100)).risk_score
        assert abs(est - p) < 0.1, (iban, p, est)


def test_explain_and_learning_report_cli(open_engine: Callable[..., Engine], clock: Clock, tmp_path: Path) -> None:
    from clearance.cli import app

    engine = open_engine()
    history(engine, clock)
    clock.tick(minutes=3)
    d = engine.evaluate(send(fresh_iban(random.Random(21))))
    runner = CliRunner()
    db = str(tmp_path / "memory.db")
    out = runner.invoke(app, ["--db", db, "explain", d.request_id])
    assert out.exit_code == 0, out.output
    assert "memory tightened the verdict" in out.output and d.precedents[0].request_id in out.output
    assert "rejected" in out.output and "rejected by a reviewer" in out.output  # the cited precedents' outcomes
    js = runner.invoke(app, ["--db", db, "explain", d.request_id, "--json"])
    assert json.loads(js.output)["decision"]["precedents"][0]["request_id"] == d.precedents[0].request_id

    rep = runner.invoke(app, ["--db", db, "learning", "report", "--json"])
    assert rep.exit_code == 0, rep.output
    data = json.loads(rep.output)
    assert data["changed_by_memory"] >= 1 and data["decisions"] == 61
    assert data["calibration"]["n"] > 0 and data["tools"]["send_money"]["with_outcome"] > 0
    text = runner.invoke(app, ["--db", db, "learning", "report"])
    assert "calibration on" in text.output and "send_money" in text.output


def test_memory_starts_over_when_the_log_changes_under_it(open_engine: Callable[..., Engine], clock: Clock) -> None:
    """Memory learns from its own engine's events before they are read back; if the store then
    loses them (a group commit that failed after all, a restored backup), memory notices at the
    next decision and rebuilds from what the store really holds."""
    from sqlalchemy import text

    engine = open_engine()
    d = engine.evaluate(send("LT100000000000000001"))
    record_if_ran(engine, d)
    engine.report_outcome(d.request_id, "harmful", cost=500.0)
    engine.warm_memory()
    clock.tick(minutes=1)
    assert [p.outcome for p in engine.evaluate(send("LT100000000000000002")).precedents] == ["harmful"]

    with engine.store.engine.begin() as conn:  # the outcome and everything after it never happened
        first = conn.execute(text("SELECT min(seq) FROM events WHERE type = 'outcome.reported'")).scalar()
        conn.execute(text("DELETE FROM events WHERE seq >= :s"), {"s": first})
        conn.execute(text("UPDATE chain_head SET seq = :s, hash = (SELECT hash FROM events WHERE seq = :s)"),
                     {"s": first - 1})  # fmt: skip
    clock.tick(minutes=1)
    after = engine.evaluate(send("LT100000000000000003"))
    assert after.precedents == [] and after.evidence == 0.0
    assert engine.memory.cursor == first  # rebuilt from what is left, then fed this decision


def test_thresholds_on_expected_harm(open_engine: Callable[..., Engine], clock: Clock) -> None:
    """A small risk on a large sum is a large risk: with block_cost_above, a first transfer of
    10,000 to an unknown account is blocked on the prior alone, while 100 is allowed."""
    engine = open_engine()
    engine.apply_rules(parse_rules("version: 1\nrisk: {approval_cost_above: 20, block_cost_above: 75}\n"))
    small = engine.evaluate(send("LT200000000000000001", 100))
    medium = engine.evaluate(send("LT200000000000000002", 800))
    large = engine.evaluate(send("LT200000000000000003", 10_000))
    assert small.allowed and small.risk_score == pytest.approx(0.05)
    assert medium.result is DecisionResult.requires_approval and "expected harm 40.00 is above approval_cost_above 20" in medium.reason
    assert large.result is DecisionResult.blocked and "expected harm 500.00 is above block_cost_above 75" in large.reason
    with pytest.raises(RuleError, match="approval_cost_above 80 is above block_cost_above 75"):
        parse_rules("version: 1\nrisk: {approval_cost_above: 80, block_cost_above: 75}\n")


def test_the_server_rebuilds_memory_before_its_first_request(tmp_path: Path, clock: Clock) -> None:
    from clearance.server import ServerThread

    with Engine(tmp_path / "memory.db", clock=clock) as engine:
        history(engine, clock, n=12)
        head = engine.audit_events(limit=10_000)[-1].seq
    with ServerThread(tmp_path / "memory.db") as server:
        assert server.engine.memory.cursor == head  # warmed in the lifespan, before serving


def test_dates_and_times_are_not_phone_numbers() -> None:
    ids = identifiers({"start": "2024-05-13 09:00", "date": "2022-01-01", "at": "2026-03-02T09:00:00", "v": "v1.2.3456789",
                       "ref": "US6149171944838464914552;50.0", "call": "ring +1 (555) 123-4567."})  # fmt: skip
    assert ("phone", "15551234567") in ids
    assert not [i for i in ids if i[0] == "phone" and i != ("phone", "15551234567")], ids


def test_a_shape_that_goes_badly_in_other_tools_is_suspect_in_a_new_one(open_engine: Callable[..., Engine],
                                                                        clock: Clock) -> None:  # fmt: skip
    """Calls to counterparties nobody worked with before went badly in two tools; a third tool
    that never saw such a call starts from that experience, while its routine calls do not."""
    engine = open_engine()
    rng = random.Random(5)

    def call(tool: str, to: str) -> dict[str, Any]:
        return {"tool": tool, "domain": "ops", "actor": "agent-1", "arguments": {"recipient": to, "note": "hi"}}

    for i in range(80):
        clock.tick(minutes=10)
        tool = ("send_email", "share_file", "notify")[i % 3]
        fresh = tool != "notify" and i % 2 == 0
        to = f"x{rng.randrange(10**9)}@new-{rng.randrange(10**6)}.io" if fresh else "team@corp.example"
        d = engine.evaluate(call(tool, to))
        if d.allowed:
            record_if_ran(engine, d)
            engine.report_outcome(d.request_id, "harmful" if fresh else "succeeded")
    clock.tick(minutes=5)
    unknown = engine.evaluate(call("notify", "someone@elsewhere-77.io")).risk_score
    routine = engine.evaluate(call("notify", "team@corp.example")).risk_score
    assert unknown > 0.3 and routine < 0.1, (unknown, routine)
    memory = engine.memory
    assert isinstance(memory, CaseMemory)
    assert memory.prior("notify", "new/usual") > 3 * memory.prior("notify", "known/usual")


def test_outcome_error_rate_corrects_for_wrong_reports(open_engine: Callable[..., Engine], clock: Clock,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """A routine call reported harmful 5% of the time by mistake looks 5% risky when reports are
    taken as exact; told that 5% of reports are wrong, or left to estimate it from how often
    identical calls' reports disagree, memory estimates the real harm (near zero) and still sees
    real harm."""
    rules = "version: 1\nrules: []\nrisk: {approval_above: 0.03, outcome_error_rate: 0.05}\n"
    results = {}
    for name, text in (("plain", "version: 1\nrules: []\nrisk: {approval_above: 0.03, outcome_error_rate: 0}\n"),
                       ("corrected", rules), ("estimated", "version: 1\nrules: []\nrisk: {approval_above: 0.03}\n")):
        engine = Engine(tmp_path / f"{name}.db", clock=clock)
        engine.apply_rules(parse_rules(text))
        rng = random.Random(11)
        for i in range(300):
            clock.tick(minutes=5)
            bad_iban = i % 5 == 0
            d = engine.evaluate(send("NL91ABNA0417164300" if bad_iban else KNOWN[0], 100))
            record_if_ran(engine, d)
            truly = bad_iban and rng.random() < 0.5
            wrong = rng.random() < 0.05
            engine.report_outcome(d.request_id, "harmful" if truly != wrong else "succeeded")
        results[name] = (engine.evaluate(send(KNOWN[0], 100)), engine.evaluate(send("NL91ABNA0417164300", 100)))
        engine.close()
    (plain_ok, plain_bad), (fixed_ok, fixed_bad) = results["plain"], results["corrected"]
    assert plain_ok.risk_score > 0.03 and plain_ok.result is DecisionResult.requires_approval
    assert fixed_ok.risk_score < 0.03 and fixed_ok.allowed, fixed_ok.reason
    assert fixed_bad.risk_score > 0.1 and not fixed_bad.allowed  # real harm is still seen
    assert fixed_bad.risk_score < plain_bad.risk_score
    est_ok, est_bad = results["estimated"]
    assert est_ok.risk_score < 0.03 and est_ok.allowed, est_ok.reason
    assert est_bad.risk_score > 0.1 and not est_bad.allowed


def test_outcome_error_rate_is_validated() -> None:
    with pytest.raises(RuleError, match="outcome_error_rate"):
        parse_rules("version: 1\nrules: []\nrisk: {outcome_error_rate: 0.5}\n")
    rules = RuleSet.compile(parse_rules("version: 1\nrules: []\ndomains: {banking: {risk: {outcome_error_rate: 0.1}}}\n"), "1")
    assert resolve_risk(rules, Action(tool="send_money", domain="banking", actor="a")).outcome_error_rate == 0.1
    # Unset: memory's own estimate.
    assert resolve_risk(rules, Action(tool="send_money", domain="other", actor="a")).outcome_error_rate is None


def test_memory_stops_waiting_for_outcomes_of_old_calls(open_engine: Callable[..., Engine], clock: Clock,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """A server decides without end: memory keeps the calls still waiting for an outcome only for
    the newest decisions and for so many days, so it stays bounded. A late outcome is recorded
    and audited all the same, and memory learns it from the stored call, featurised again
    (issue 18). A rebuild forgets and revives alike."""
    engine = open_engine(memory=CaseMemory(max_waiting=3, wait_days=7))
    memory = engine.memory
    assert isinstance(memory, CaseMemory)
    first = engine.evaluate(send("DE89370400440532013000"))
    answered = engine.evaluate(send("FR1420041010050500013M02606"))
    engine.report_outcome(answered.request_id, "succeeded")  # learnt: kept whatever its age
    later = [engine.evaluate(send(KNOWN[2])) for _ in range(3)]
    assert first.request_id not in memory._cases  # three newer decisions: no longer waited for
    assert answered.request_id in memory._cases and all(d.request_id in memory._cases for d in later)
    engine.report_outcome(first.request_id, "harmful")
    assert [o.status.value for o in engine.outcomes(first.request_id)] == ["harmful"]
    engine.warm_memory()  # (memory reads the outcome from the log, as before the next decision)
    assert memory._labelled["send_money"] == pytest.approx(2.0)  # the late one too, made again from the store
    assert memory.revived == 1
    # Days count too: a week later the waiting calls are forgotten on the next decision.
    clock.tick(days=8)
    newest = engine.evaluate(send(KNOWN[0]))
    assert not any(d.request_id in memory._cases for d in later)
    assert newest.request_id in memory._cases and answered.request_id in memory._cases
    engine.report_outcome(later[0].request_id, "harmful")
    engine.warm_memory()
    assert memory._labelled["send_money"] == pytest.approx(3.0) and memory.revived == 2
    # Rebuilt from the audit log, memory forgets the same calls and learns the same.
    rebuilt = CaseMemory(max_waiting=3, wait_days=7)
    with Engine(tmp_path / "memory.db", clock=clock, memory=rebuilt) as again:
        again.warm_memory()
        assert set(rebuilt._cases) == set(memory._cases)
        assert rebuilt._labelled == memory._labelled
    with pytest.raises(ValueError, match="max_waiting"):
        CaseMemory(max_waiting=0)


def test_cases_are_not_walked_by_the_garbage_collector(open_engine: Callable[..., Engine], clock: Clock) -> None:
    """A server keeps up to a million cases. The garbage collector's full collections hold the
    event loop while they walk every object it tracks, so cases, waiting or learnt from, must
    not be such objects: once collected, memory grows without growing what is walked."""
    engine = open_engine()
    memory = engine.memory
    assert isinstance(memory, CaseMemory)

    def decide_and_learn(first: int, n: int) -> None:
        decided = []
        for i in range(first, first + n):
            clock.tick(minutes=1)
            attack = i % 5 == 0
            decision = engine.evaluate(send(f"LT{10**17 + i}" if attack else KNOWN[i % 3], 50.0 + i))
            decided.append((decision.request_id, attack))
        for request_id, attack in decided[::2]:
            engine.report_outcome(request_id, "harmful" if attack else "succeeded")
        engine.evaluate(send(KNOWN[0]))  # memory learns what was reported before deciding
        for _ in range(3):  # a tuple is let go once what it holds is: one level of nesting a pass
            gc.collect()

    decide_and_learn(0, 30)  # caches and statements of every path set up once
    tracked = len(gc.get_objects())
    decide_and_learn(30, 300)
    assert len(memory._cases) == 332 and len(memory._row_case) == 165  # all kept, half learnt from
    assert len(gc.get_objects()) - tracked < 100  # as objects, the 301 cases alone would add 301


def test_argument_tokens_remembered_per_tool_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unique argument values (order ids, free text) are remembered to tell rare arguments from
    usual ones, but not without end: past the limit the least seen half is forgotten."""
    from clearance.memory import features

    monkeypatch.setattr(features, "_TOKEN_LIMIT", 10)
    f = features.Featuriser()
    for i in range(40):
        action = Action(tool="refund", actor="a", domain="shop", arguments={"order_id": f"ord_{i}", "reason": "damaged"})
        f.observe_call(action, f.vector(action)[1])
    seen = f.tokens["refund"]
    assert len(seen) <= 10
    assert seen["reason=damaged"] == 40  # the usual value survives every pruning


def test_memory_limits_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``clearance serve`` and the CLI build their engines themselves: the limits are set there
    through the environment, and a bad value is refused with the variable's name."""
    monkeypatch.setenv("CLEARANCE_MEMORY_MAX_WAITING", "5000")
    monkeypatch.setenv("CLEARANCE_MEMORY_WAIT_DAYS", "30")
    with Engine(tmp_path / "env.db") as engine:
        assert isinstance(engine.memory, CaseMemory)
        assert engine.memory.max_waiting == 5000 and engine.memory.wait == 30 * 86400
    for name, value in (("CLEARANCE_MEMORY_MAX_WAITING", "1.5"), ("CLEARANCE_MEMORY_WAIT_DAYS", "nan"),
                        ("CLEARANCE_MEMORY_MAX_WAITING", "0")):  # fmt: skip
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=name):
            Engine(tmp_path / "env.db")
        monkeypatch.delenv(name)
