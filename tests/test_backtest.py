"""The backtest: a synthetic history whose right answer is known, replayed under candidate rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from clearance import Engine
from clearance.engine.backtest import BacktestReport
from clearance.policy import parse_rules

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)

RECORDED = """
version: 1
rules:
  - {id: refund-cap, tool: refund, max_value: 1000}
  - {id: no-deletes, tool: delete_user, effect: block}
"""

CANDIDATE = """
version: 1
rules:
  - {id: refund-cap, tool: refund, max_value: 800}
  - {id: refund-ask, tool: refund, require_approval_above: 300}
  - {id: email-rate, tool: send_email, max_per_hour: 4}
  - {id: watch-wires, tool: wire, max_value: 1, status: shadow}
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 60) -> None:
        self.now += timedelta(seconds=seconds)


def _history(engine: Engine, clock: Clock) -> None:
    """20 refunds (100, 500, 900, 1200 five times), 10 e-mails in ten minutes, 3 deletes, 1 wire
    under a kill switch; outcomes: 3 of the 900 refunds harmful at 900, one 500 refund reverted
    at 500, every other refund and e-mail succeeded."""
    harmful_900, reverted_500 = 3, 1
    for i in range(5):
        for value in (100, 500, 900, 1200):
            d = engine.evaluate({"tool": "refund", "arguments": {"amount": value}, "actor": "agent", "value": value})
            clock.tick()
            if d.result.value == "blocked":
                continue
            if value == 900 and i < harmful_900:
                engine.report_outcome(d.request_id, "harmful", severity=1.0, cost=900)
            elif value == 500 and i < reverted_500:
                engine.report_outcome(d.request_id, "reverted", cost=500)
            else:
                engine.report_outcome(d.request_id, "succeeded")
    for _ in range(10):
        d = engine.evaluate({"tool": "send_email", "arguments": {"to": "x@example.com"}, "actor": "bot"})
        engine.report_outcome(d.request_id, "succeeded")
        clock.tick()
    for _ in range(3):
        assert engine.evaluate({"tool": "delete_user", "arguments": {"id": 1}, "actor": "agent"}).result.value == "blocked"
        clock.tick()
    engine.activate_kill_switch(tool="wire", reason="incident")
    assert engine.evaluate({"tool": "wire", "arguments": {}, "actor": "agent", "value": 5}).result.value == "blocked"
    clock.tick()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Clock]:
    clock = Clock()
    path = tmp_path_factory.mktemp("backtest") / "history.db"
    with Engine(path, clock=clock) as engine:
        engine.apply_rules(parse_rules(RECORDED))
        _history(engine, clock)
    return path, clock


def _tally(report: BacktestReport, kind: str) -> dict[str, Any]:
    return getattr(report, kind).model_dump()


def test_counts_and_money_match_the_known_answer(recorded: tuple[Path, Clock]) -> None:
    path, clock = recorded
    with Engine(path, clock=clock) as engine:
        before = (engine.verify_audit(), len(engine.audit_events(limit=10_000)))
        report = engine.backtest(parse_rules(CANDIDATE))
        assert (engine.verify_audit(), len(engine.audit_events(limit=10_000))) == before  # nothing written
    assert report.decisions == 34
    assert report.transitions == {"allowed->blocked": 11, "allowed->requires_approval": 5, "blocked->allowed": 3}
    assert report.changed == 19
    # 5 refunds of 900 (3 harmful at 900 each, 2 succeeded) and e-mails 5-10 over the hourly limit of 4.
    assert _tally(report, "newly_blocked") == {"calls": 11, "harmful": 3, "bad": 3, "succeeded": 8, "no_outcome": 0,
                                               "cost": 2700.0}  # fmt: skip
    assert _tally(report, "newly_asking") == {"calls": 5, "harmful": 0, "bad": 1, "succeeded": 4, "no_outcome": 0,
                                              "cost": 500.0}  # fmt: skip
    # The deletes were blocked and never ran; the wire stays blocked: a kill switch is not the rules'.
    assert _tally(report, "newly_allowed") == {"calls": 3, "harmful": 0, "bad": 0, "succeeded": 0, "no_outcome": 3,
                                               "cost": 0.0}  # fmt: skip
    assert (report.harm_avoided, report.cost_avoided, report.successful_stopped) == (3, 2700.0, 8)
    assert report.approval_load_added == 5
    rules = {r.rule_id: r for r in report.rules}
    assert rules["refund-cap"].fired == 10 and rules["refund-cap"].newly_blocked.cost == 2700.0
    assert rules["refund-cap"].newly_blocked.calls == 5 and rules["refund-cap"].newly_asking.calls == 0
    assert rules["refund-ask"].fired == 15 and rules["refund-ask"].newly_asking.calls == 5
    assert rules["refund-ask"].newly_asking.bad == 1 and rules["refund-ask"].newly_blocked.calls == 0
    assert rules["email-rate"].fired == 6 and rules["email-rate"].newly_blocked.succeeded == 6
    assert rules["watch-wires"].fired == 0  # the kill switch's block is history's, not re-judged
    assert report.examples[0].candidate.value == "requires_approval" and report.examples[0].recorded.value == "allowed"


def test_since_limits_the_window_and_the_counters_start_empty(recorded: tuple[Path, Clock]) -> None:
    path, clock = recorded
    with Engine(path, clock=clock) as engine:
        # From the fourth e-mail on: the window's own counters see 3 + 4 held slots of 7 e-mails.
        report = engine.backtest(parse_rules(CANDIDATE), since=T0 + timedelta(minutes=23))
    assert report.decisions == 11
    assert report.transitions == {"allowed->blocked": 3, "blocked->allowed": 3}
    assert report.newly_blocked.succeeded == 3


def test_the_api_and_remote_engine_answer_the_same(recorded: tuple[Path, Clock], tmp_path: Path) -> None:
    from app_support import InProcessApp, InProcessRemoteEngine

    path, clock = recorded
    with Engine(path, clock=clock) as engine:
        expected = engine.backtest(parse_rules(CANDIDATE))
        _, token = engine.keys.create("backtest-tests", "approver")
        with InProcessApp(engine) as app:
            remote = InProcessRemoteEngine(app, token)
            try:
                assert remote.backtest(parse_rules(CANDIDATE)) == expected
                since = T0 + timedelta(minutes=5)
                assert remote.rule_evidence("refund-cap", since=since) == engine.rule_evidence("refund-cap", since=since)
                from clearance.errors import ConflictError

                admin = InProcessRemoteEngine(app, engine.keys.create("backtest-admin", "admin")[1])
                try:
                    with pytest.raises(ConflictError, match="not in shadow"):
                        admin.promote_rule("refund-cap")
                finally:
                    admin.close()
                bad = remote._client.post("/v1/rules/backtest", json={"yaml": "rules: [{id: x, max_value: -1}]"})  # type: ignore[attr-defined]
                assert bad.status_code == 422 and "max_value" in bad.text
            finally:
                remote.close()


SHADOWED = """
version: 1
rules:
  - {id: big-refunds, tool: refund, max_value: 700, status: shadow}
  - {id: night-mail, tool: send_email, when: "args.to == 'ceo@example.com'", effect: require_approval, status: shadow}
"""


def test_promotion_shows_evidence_and_refuses_without_it(tmp_path: Path) -> None:
    from clearance.errors import ConflictError

    clock = Clock()
    with Engine(tmp_path / "s.db", clock=clock) as engine:
        engine.apply_rules(parse_rules(SHADOWED))
        for value, status, cost in ((900, "harmful", 900.0), (800, "succeeded", 0.0), (950, "reverted", 100.0),
                                    (1000, None, 0.0), (100, "harmful", 100.0)):  # fmt: skip
            d = engine.evaluate({"tool": "refund", "arguments": {"amount": value}, "actor": "a", "value": value})
            assert d.result.value == "allowed"  # shadow: never enforced
            if status:
                engine.report_outcome(d.request_id, status, cost=cost)
            clock.tick()
        d = engine.evaluate({"tool": "send_email", "arguments": {"to": "ceo@example.com"}, "actor": "a"})
        ev = engine.rule_evidence("big-refunds")
        # Fired on 900, 800, 950, 1000; outcomes known for three: two went wrong (one harmful), one succeeded.
        assert (ev.fired, ev.would_block, ev.with_outcome, ev.bad, ev.harmful, ev.succeeded) == (4, 4, 3, 2, 1, 1)
        assert ev.precision == pytest.approx(2 / 3) and ev.friction == 1 and ev.cost == 1000.0
        with pytest.raises(ConflictError, match="no evidence.*night-mail.*1 call.*0 with an outcome"):
            engine.promote_rule("night-mail")
        with pytest.raises(ConflictError, match="big-refunds.*3 with an outcome \\(at least 5"):
            engine.promote_rule("big-refunds", min_outcomes=5)
        assert engine.current_rules().rules[1].rule.status == "shadow"  # nothing changed
        done = engine.promote_rule("night-mail", force=True, applied_by="ops")
        assert done.forced and done.evidence.with_outcome == 0
        promoted = engine.promote_rule("big-refunds")
        assert not promoted.forced and promoted.evidence.precision == pytest.approx(2 / 3)
        assert {r.id: r.rule.status for r in engine.current_rules().rules} == {"big-refunds": "active", "night-mail": "active"}
        assert engine.evaluate({"tool": "refund", "arguments": {}, "actor": "a", "value": 900}).result.value == "blocked"
        with pytest.raises(ConflictError, match="not in shadow"):
            engine.promote_rule("big-refunds", force=True)


def test_cli_backtest_and_promote(recorded: tuple[Path, Clock], tmp_path: Path) -> None:
    import json
    import os

    from cli_support import run_cli

    path, _ = recorded
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE)
    env = {**os.environ, "COLUMNS": "200", "CLEARANCE_DB": str(path)}
    out = run_cli(["backtest", "--rules", str(candidate), "--json"], env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["cost_avoided"] == 2700.0 and report["transitions"]["allowed->requires_approval"] == 5
    text = run_cli(["backtest", "--rules", str(candidate), "--since", "3650d"], env=env)
    assert text.returncode == 0 and "harm avoided 3 harmful call(s), cost avoided 2,700.00" in text.stdout
    bad = run_cli(["backtest", "--rules", str(candidate), "--since", "last tuesday"], env=env)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
    refused = run_cli(["rules", "promote", "refund-cap"], env=env)
    assert refused.returncode == 1 and "not in shadow" in refused.stderr and "Traceback" not in refused.stderr


def test_on_postgresql_the_backtest_and_drift_read_the_same_record(pg_url: str) -> None:
    """The history reads (decisions streamed in time order, outcomes, the chain's outcome events)
    on the other backend."""
    from clearance.memory.drift import DriftSettings

    clock = Clock()
    with Engine(pg_url, clock=clock, drift=DriftSettings(warmup=30)) as engine:
        engine.apply_rules(parse_rules(RECORDED))
        _history(engine, clock)
        report = engine.backtest(parse_rules(CANDIDATE))
        assert report.transitions == {"allowed->blocked": 11, "allowed->requires_approval": 5, "blocked->allowed": 3}
        assert (report.harm_avoided, report.cost_avoided, report.successful_stopped) == (3, 2700.0, 8)
        for status in ["succeeded"] * 40 + ["harmful"] * 20:
            d = engine.evaluate({"tool": "payout", "arguments": {}, "actor": "bot"})
            engine.report_outcome(d.request_id, status)
            clock.tick()
        assert ("tool", "payout") in {(e.payload["scope"], e.payload["value"])
                                          for e in engine.audit_events(type="drift.detected")}  # fmt: skip
