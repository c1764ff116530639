"""Every rule field, judged through a real engine on a SQLite file with a pinned clock.

Times are chosen as UTC instants; the expected verdicts follow the local wall clock of the
rule's time zone, including the 2024 daylight-saving changes in Berlin and New York.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clearance.engine.core import Engine
from clearance.errors import ConflictError, DuplicateVote
from clearance.model import ApprovalStatus, Decision, DecisionResult, RuleMatch
from clearance.policy import RuleFile, parse_rules

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=timezone.utc)  # Monday 10:00 UTC


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_engine(tmp_path: Path, clock: Clock):
    made: list[Engine] = []

    def make(*rules: dict[str, Any], **kw: Any) -> Engine:
        source = RuleFile.model_validate({"version": 1, "rules": list(rules)})
        engine = Engine(tmp_path / f"e{len(made)}.db", rules=source, clock=lambda: clock.now, **kw)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def call(engine: Engine, tool: str = "refund_payment", **fields: Any) -> Decision:
    return engine.evaluate({"tool": tool, **fields})


def fired(decision: Decision) -> list[tuple[str, str]]:
    return [(m.rule_id, m.limit) for m in decision.matched_rules]


# -- selectors ------------------------------------------------------------------------------


def test_exact_selector(make_engine) -> None:
    eng = make_engine({"id": "r", "domain": "payments", "tool": "refund_payment", "actors": ["agent-1"], "max_value": 10})
    base = {"domain": "payments", "actor": "agent-1", "value": 50}
    assert call(eng, **base).result is DecisionResult.blocked
    for change in ({"domain": "payments-eu"}, {"actor": "agent-10"}, {"actor": "Agent-1"}):
        d = call(eng, **{**base, **change})
        assert d.allowed, change
        assert d.reason == "no rule applies to this call"
    assert call(eng, "refund_payments", **base).allowed


@pytest.mark.parametrize(
    ("tool", "domain", "actor", "applies"),
    [
        ("refund_payment", "payments", "agent-7", True),
        ("refund_card", "pay-eu", "bot-x", True),
        ("refund_", "pay", "agent-", True),
        ("Refund_payment", "payments", "agent-7", False),  # globs are case-sensitive
        ("send_refund", "payments", "agent-7", False),
        ("refund_payment", "billing", "agent-7", False),
        ("refund_payment", "payments", "bot-xy", False),
        ("refund_payment", "payments", "human", False),
    ],
)
def test_glob_selector(make_engine, tool: str, domain: str, actor: str, applies: bool) -> None:
    eng = make_engine({"id": "r", "domain": "pay*", "tool": "refund_*", "actors": ["agent-*", "bot-?"], "max_value": 10})
    d = call(eng, tool, domain=domain, actor=actor, value=50)
    assert d.result is (DecisionResult.blocked if applies else DecisionResult.allowed)


def test_rule_without_selectors_matches_everything(make_engine) -> None:
    eng = make_engine({"id": "cap", "max_value": 10})
    for tool, domain, actor in (("a", "x", "u"), ("deploy_prod", "ops", "ci-bot"), ("refund_payment", "default", "anonymous")):
        d = call(eng, tool, domain=domain, actor=actor, value=11)
        assert fired(d) == [("cap", "max_value")]
        assert call(eng, tool, domain=domain, actor=actor, value=9).reason == "within the limits of 1 applicable rule"


# -- value limits ---------------------------------------------------------------------------


def test_max_value_reason_names_rule_and_limit(make_engine) -> None:
    eng = make_engine({"id": "refunds-eu", "tool": "refund_payment", "max_value": 2000})
    d = call(eng, value=5000)
    assert d.result is DecisionResult.blocked and not d.allowed
    assert d.reason == "refund_payment of 5,000.00 exceeds max_value 2,000 in rule refunds-eu"
    assert d.matched_rules == [RuleMatch(rule_id="refunds-eu", rule_version=1, effect="block", limit="max_value",
                                         reason=d.reason)]  # fmt: skip
    assert call(eng, value=2000).allowed  # the limit itself is allowed
    assert call(eng, value=2000.01).result is DecisionResult.blocked


def test_min_value(make_engine) -> None:
    eng = make_engine({"id": "floor", "min_value": 1})
    d = call(eng, value=0.5)
    assert d.result is DecisionResult.blocked
    assert d.reason == "refund_payment of 0.50 is below min_value 1 in rule floor"
    assert call(eng, value=1).allowed


def test_require_approval_above(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "big", "require_approval_above": 500})
    assert call(eng, value=500).allowed
    d = call(eng, value=750.5, actor="agent")
    assert d.result is DecisionResult.requires_approval and d.requires_approval and not d.allowed
    assert d.reason == "refund_payment of 750.50 is above require_approval_above 500 in rule big"
    assert d.approval_id is not None
    assert d.approval_expires_at == clock.now + timedelta(hours=24)  # engine default
    approval = eng.get_approval(d.approval_id)
    assert approval.status is ApprovalStatus.pending and approval.value == 750.5


def test_call_without_value_is_never_blocked_by_value_limits(make_engine) -> None:
    eng = make_engine(
        {"id": "lims", "max_value": 10, "min_value": 5, "require_approval_above": 1},
        {"id": "budget", "budget": 1},
        {"id": "cond", "when": "value > 100.0"},
    )
    d = call(eng, arguments={"note": "no money involved"})
    assert d.allowed, d.reason
    assert d.matched_rules == []
    # ... and with a value the same rules do fire.
    assert {r for r, _ in fired(call(eng, value=500))} == {"lims", "budget", "cond"}


def test_call_without_value_passes_an_exhausted_budget(tmp_path: Path, clock: Clock) -> None:
    doc = "version: 1\nrules:\n  - id: budget\n    budget: {budget}\n"
    with Engine(tmp_path / "x.db", clock=lambda: clock.now) as eng:
        eng.apply_rules(parse_rules(doc.format(budget=100)))
        assert call(eng, value=80).allowed
        eng.apply_rules(parse_rules(doc.format(budget=50)))  # already 30 over the new budget
        assert call(eng, value=1).result is DecisionResult.blocked
        d = call(eng)
        assert d.allowed, d.reason


# -- rate limits and cooldown ---------------------------------------------------------------


def test_max_per_hour_rolling_window(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "hourly", "max_per_hour": 2})
    assert call(eng, actor="a").allowed
    clock.advance(10)
    assert call(eng, actor="a").allowed
    clock.advance(10)
    d = call(eng, actor="a")
    assert d.result is DecisionResult.blocked
    assert d.reason == "actor a reached max_per_hour 2 in rule hourly (2 calls in the last hour)"
    assert call(eng, actor="b").allowed  # per actor
    clock.now = T0 + timedelta(seconds=3599)
    assert call(eng, actor="a").result is DecisionResult.blocked
    clock.now = T0 + timedelta(seconds=3600)  # the first call has just left the window
    assert call(eng, actor="a").allowed
    assert call(eng, actor="a").result is DecisionResult.blocked


def test_max_per_day_rolling_window(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "daily", "tool": "send_email", "max_per_day": 2})
    assert call(eng, "send_email", actor="a").allowed
    clock.advance(3600)
    assert call(eng, "send_email", actor="a").allowed
    clock.now = T0 + timedelta(hours=23, minutes=59)
    d = call(eng, "send_email", actor="a")
    assert fired(d) == [("daily", "max_per_day")]
    assert d.reason == "actor a reached max_per_day 2 in rule daily (2 calls in the last 24 hours)"
    clock.now = T0 + timedelta(days=1)
    assert call(eng, "send_email", actor="a").allowed
    assert call(eng, "send_email", actor="a").result is DecisionResult.blocked
    clock.now = T0 + timedelta(days=1, hours=1)  # the second call has left the window too
    assert call(eng, "send_email", actor="a").allowed


def test_zero_rate_limit_blocks_everything(make_engine) -> None:
    eng = make_engine({"id": "none", "max_per_hour": 0})
    assert fired(call(eng)) == [("none", "max_per_hour")]


def test_cooldown_per_actor_and_target(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "cool", "cooldown_seconds": 60})
    assert call(eng, actor="a", target="x").allowed
    clock.advance(30)
    d = call(eng, actor="a", target="x")
    assert d.result is DecisionResult.blocked
    assert d.reason == "actor a must wait 30s more before refund_payment on x (cooldown_seconds 60 in rule cool)"
    assert call(eng, actor="a", target="y").allowed  # another target
    assert call(eng, actor="b", target="x").allowed  # another actor
    clock.now = T0 + timedelta(seconds=59)
    assert call(eng, actor="a", target="x").result is DecisionResult.blocked
    clock.now = T0 + timedelta(seconds=60)  # measured from the last allowed call, not the blocked ones
    assert call(eng, actor="a", target="x").allowed


def test_cooldown_without_target(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "cool", "cooldown_seconds": 5})
    assert call(eng, actor="a").allowed
    d = call(eng, actor="a")
    assert fired(d) == [("cool", "cooldown_seconds")]
    assert "before refund_payment (cooldown_seconds 5" in d.reason
    clock.advance(5)
    assert call(eng, actor="a").allowed


# -- allowed_hours --------------------------------------------------------------------------


def _hours_engine(make_engine, **hours: Any) -> Engine:
    return make_engine({"id": "hours", "tool": "deploy", "allowed_hours": hours})


def _allowed_at(eng: Engine, clock: Clock, at: datetime) -> bool:
    clock.now = at
    d = call(eng, "deploy")
    assert d.result in (DecisionResult.allowed, DecisionResult.blocked)
    if not d.allowed:
        assert fired(d) == [("hours", "allowed_hours")]
    return d.allowed


def test_allowed_hours_utc_default_and_reason(make_engine, clock: Clock) -> None:
    eng = _hours_engine(make_engine, start=9, end=17)
    assert not _allowed_at(eng, clock, utc(2024, 5, 6, 8, 59, 59))
    assert _allowed_at(eng, clock, utc(2024, 5, 6, 9, 0))  # start inclusive
    assert _allowed_at(eng, clock, utc(2024, 5, 6, 16, 59, 59))
    clock.now = utc(2024, 5, 6, 17, 0)  # end exclusive
    d = call(eng, "deploy")
    assert d.result is DecisionResult.blocked
    assert d.reason == "deploy at Mon 17:00 UTC is outside allowed_hours 09:00-17:00 UTC in rule hours"


def test_allowed_hours_minutes(make_engine, clock: Clock) -> None:
    eng = _hours_engine(make_engine, start="08:30", end="17:45", tz="Europe/Berlin")
    # 2024-07-01: CEST, UTC+2
    assert not _allowed_at(eng, clock, utc(2024, 7, 1, 6, 29))
    assert _allowed_at(eng, clock, utc(2024, 7, 1, 6, 30))
    assert _allowed_at(eng, clock, utc(2024, 7, 1, 15, 44))
    assert not _allowed_at(eng, clock, utc(2024, 7, 1, 15, 45))


@pytest.mark.parametrize(
    ("tz", "at", "allowed"),
    [
        # Berlin summer (UTC+2) and winter (UTC+1)
        ("Europe/Berlin", utc(2024, 7, 1, 6, 59), False),
        ("Europe/Berlin", utc(2024, 7, 1, 7, 0), True),
        ("Europe/Berlin", utc(2024, 7, 1, 14, 59), True),
        ("Europe/Berlin", utc(2024, 7, 1, 15, 0), False),
        ("Europe/Berlin", utc(2024, 1, 15, 7, 59), False),
        ("Europe/Berlin", utc(2024, 1, 15, 8, 0), True),
        ("Europe/Berlin", utc(2024, 1, 15, 15, 59), True),
        ("Europe/Berlin", utc(2024, 1, 15, 16, 0), False),
        # New York summer (UTC-4) and winter (UTC-5)
        ("America/New_York", utc(2024, 7, 1, 12, 59), False),
        ("America/New_York", utc(2024, 7, 1, 13, 0), True),
        ("America/New_York", utc(2024, 7, 1, 20, 59), True),
        ("America/New_York", utc(2024, 7, 1, 21, 0), False),
        ("America/New_York", utc(2024, 1, 15, 13, 59), False),
        ("America/New_York", utc(2024, 1, 15, 14, 0), True),
        ("America/New_York", utc(2024, 1, 15, 22, 0), False),
    ],
)
def test_allowed_hours_follow_local_time(make_engine, clock: Clock, tz: str, at: datetime, allowed: bool) -> None:
    eng = _hours_engine(make_engine, start=9, end=17, tz=tz)
    assert _allowed_at(eng, clock, at) is allowed


def test_overnight_window(make_engine, clock: Clock) -> None:
    eng = _hours_engine(make_engine, start=22, end=6, tz="Europe/Berlin")
    # 2024-01-15 is in CET (UTC+1)
    assert not _allowed_at(eng, clock, utc(2024, 1, 15, 20, 59))  # 21:59 local
    assert _allowed_at(eng, clock, utc(2024, 1, 15, 21, 0))  # 22:00
    assert _allowed_at(eng, clock, utc(2024, 1, 15, 23, 30))  # 00:30 next day
    assert _allowed_at(eng, clock, utc(2024, 1, 16, 4, 59))  # 05:59
    assert not _allowed_at(eng, clock, utc(2024, 1, 16, 5, 0))  # 06:00
    assert not _allowed_at(eng, clock, utc(2024, 1, 16, 12, 0))


def test_whole_day_window_includes_the_last_instant(make_engine, clock: Clock) -> None:
    eng = _hours_engine(make_engine, start=0, end=24, tz="Europe/Berlin")
    last = datetime(2024, 7, 1, 23, 59, 59, 999999, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(timezone.utc)
    for at in (utc(2024, 7, 1, 22, 0), utc(2024, 7, 1, 12, 0), last):
        assert _allowed_at(eng, clock, at), at


def test_days_use_the_local_weekday(make_engine, clock: Clock) -> None:
    eng = _hours_engine(make_engine, start=9, end=17, tz="Europe/Berlin", days=["mon", "tue", "wed", "thu", "fri"])
    assert _allowed_at(eng, clock, utc(2024, 7, 5, 10, 0))  # Friday
    assert not _allowed_at(eng, clock, utc(2024, 7, 6, 10, 0))  # Saturday
    clock.now = utc(2024, 7, 7, 10, 0)
    assert call(eng, "deploy").reason == (
        "deploy at Sun 12:00 Europe/Berlin is outside allowed_hours 09:00-17:00 Europe/Berlin "
        "on mon, tue, wed, thu, fri in rule hours"
    )
    # Sunday 22:30 UTC is already Monday 00:30 in Berlin.
    night = _hours_engine(make_engine, start=0, end=6, tz="Europe/Berlin", days=["mon"])
    assert _allowed_at(night, clock, utc(2024, 7, 7, 22, 30))
    assert not _allowed_at(night, clock, utc(2024, 7, 8, 22, 30))  # Tuesday 00:30 local


def test_berlin_spring_forward(make_engine, clock: Clock) -> None:
    """2024-03-31: at 01:00 UTC, Berlin jumps from 02:00 CET to 03:00 CEST."""
    office = _hours_engine(make_engine, start=9, end=17, tz="Europe/Berlin")
    # The same UTC time of day is 08:30 local on Saturday, 09:30 local on Sunday.
    assert not _allowed_at(office, clock, utc(2024, 3, 30, 7, 30))
    assert _allowed_at(office, clock, utc(2024, 3, 31, 7, 30))
    assert not _allowed_at(office, clock, utc(2024, 3, 31, 6, 59))  # 08:59 CEST
    assert _allowed_at(office, clock, utc(2024, 3, 30, 15, 30))  # 16:30 CET
    assert not _allowed_at(office, clock, utc(2024, 3, 31, 15, 0))  # 17:00 CEST
    clock.now = utc(2024, 3, 31, 6, 59)
    assert "Sun 08:59 Europe/Berlin" in call(office, "deploy").reason

    # 02:00-03:00 does not exist that night: no instant falls in the window.
    gap = _hours_engine(make_engine, start=2, end=3, tz="Europe/Berlin")
    start = utc(2024, 3, 30, 23, 0)
    for minutes in range(0, 4 * 60, 15):
        assert not _allowed_at(gap, clock, start + timedelta(minutes=minutes))
    assert not _allowed_at(gap, clock, utc(2024, 3, 31, 0, 59, 59))  # 01:59:59 CET
    assert not _allowed_at(gap, clock, utc(2024, 3, 31, 1, 0))  # 03:00 CEST
    assert _allowed_at(gap, clock, utc(2024, 3, 30, 1, 30))  # the night before: 02:30 CET


def test_berlin_fall_back(make_engine, clock: Clock) -> None:
    """2024-10-27: at 01:00 UTC, Berlin goes back from 03:00 CEST to 02:00 CET."""
    twice = _hours_engine(make_engine, start=2, end=3, tz="Europe/Berlin")
    assert not _allowed_at(twice, clock, utc(2024, 10, 26, 23, 59))  # 01:59 CEST
    assert _allowed_at(twice, clock, utc(2024, 10, 27, 0, 0))  # 02:00 CEST
    assert _allowed_at(twice, clock, utc(2024, 10, 27, 0, 59))  # 02:59 CEST
    assert _allowed_at(twice, clock, utc(2024, 10, 27, 1, 0))  # 02:00 CET, the hour again
    assert _allowed_at(twice, clock, utc(2024, 10, 27, 1, 59))  # 02:59 CET
    assert not _allowed_at(twice, clock, utc(2024, 10, 27, 2, 0))  # 03:00 CET

    office = _hours_engine(make_engine, start=9, end=17, tz="Europe/Berlin")
    assert _allowed_at(office, clock, utc(2024, 10, 26, 7, 0))  # Saturday 09:00 CEST
    assert not _allowed_at(office, clock, utc(2024, 10, 27, 7, 0))  # Sunday 08:00 CET
    assert _allowed_at(office, clock, utc(2024, 10, 27, 8, 0))  # 09:00 CET
    assert _allowed_at(office, clock, utc(2024, 10, 27, 15, 59))  # 16:59 CET
    assert not _allowed_at(office, clock, utc(2024, 10, 27, 16, 0))  # 17:00 CET


def test_new_york_dst_changes(make_engine, clock: Clock) -> None:
    # 2024-03-10: at 07:00 UTC, 02:00 EST becomes 03:00 EDT; 02:00-03:00 never happens.
    gap = _hours_engine(make_engine, start=2, end=3, tz="America/New_York")
    assert not _allowed_at(gap, clock, utc(2024, 3, 10, 6, 59))  # 01:59 EST
    assert not _allowed_at(gap, clock, utc(2024, 3, 10, 7, 0))  # 03:00 EDT
    assert _allowed_at(gap, clock, utc(2024, 3, 9, 7, 30))  # the day before: 02:30 EST
    # 2024-11-03: at 06:00 UTC, 02:00 EDT becomes 01:00 EST; 01:00-02:00 happens twice.
    twice = _hours_engine(make_engine, start=1, end=2, tz="America/New_York")
    assert not _allowed_at(twice, clock, utc(2024, 11, 3, 4, 59))  # 00:59 EDT
    assert _allowed_at(twice, clock, utc(2024, 11, 3, 5, 30))  # 01:30 EDT
    assert _allowed_at(twice, clock, utc(2024, 11, 3, 6, 30))  # 01:30 EST
    assert not _allowed_at(twice, clock, utc(2024, 11, 3, 7, 0))  # 02:00 EST


# -- actor lists ----------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "allowed"), [("agent-1", True), ("agent-", True), ("human", False), ("xagent-1", False)])
def test_allow_actors(make_engine, actor: str, allowed: bool) -> None:
    eng = make_engine({"id": "only-agents", "allow_actors": ["agent-*"]})
    d = call(eng, actor=actor)
    assert d.allowed is allowed
    if not allowed:
        assert d.reason == f"actor {actor} is not in allow_actors of rule only-agents"


@pytest.mark.parametrize(("actor", "blocked"), [("bot-test", True), ("mallory", True), ("alice", False), ("test-bot", False)])
def test_deny_actors(make_engine, actor: str, blocked: bool) -> None:
    eng = make_engine({"id": "deny", "deny_actors": ["*-test", "mallory"]})
    d = call(eng, actor=actor)
    assert (d.result is DecisionResult.blocked) is blocked
    if blocked:
        assert d.reason == f"actor {actor} is in deny_actors of rule deny"


def test_actor_lists_as_single_strings(make_engine) -> None:
    eng = make_engine({"id": "deny", "deny_actors": "mallory"})
    assert call(eng, actor="mallory").result is DecisionResult.blocked
    assert call(eng, actor="malloryx").allowed


# -- budget ---------------------------------------------------------------------------------


def test_budget_rolling_24h_per_actor(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "spend", "budget": 1000})
    assert call(eng, actor="a", value=600).allowed
    clock.advance(3600)
    assert call(eng, actor="a", value=400).allowed  # exactly at the budget
    d = call(eng, actor="a", value=0.01)
    assert d.result is DecisionResult.blocked
    assert d.reason == ("refund_payment of 0.01 would bring actor a's 24-hour total to 1,000.01, "
                        "over budget 1,000 in rule spend")  # fmt: skip
    assert call(eng, actor="b", value=1000).allowed  # per actor
    clock.now = T0 + timedelta(hours=24)  # the 600 has left the window, the 400 has not
    assert call(eng, actor="a", value=600.01).result is DecisionResult.blocked
    assert call(eng, actor="a", value=600).allowed


def test_single_call_over_budget(make_engine) -> None:
    eng = make_engine({"id": "spend", "budget": 100})
    assert fired(call(eng, value=100.5)) == [("spend", "budget")]
    assert call(eng, value=100).allowed  # the blocked call did not count


# -- conditions -----------------------------------------------------------------------------


def test_when_with_effect_block_and_default(make_engine) -> None:
    eng = make_engine(
        {"id": "eur-only", "tool": "refund_payment", "when": 'has(args.currency) && args.currency != "EUR"', "effect": "block"},
        {"id": "big-note", "tool": "refund_payment", "when": "size(args.note) > 10"},  # no effect: block
    )
    d = call(eng, arguments={"currency": "USD", "note": ""})
    assert d.result is DecisionResult.blocked
    assert fired(d) == [("eur-only", "when")]
    assert d.reason == ("condition `has(args.currency) && args.currency != \"EUR\"` holds, "
                        "so rule eur-only blocks refund_payment")  # fmt: skip
    assert call(eng, arguments={"currency": "EUR", "note": "ok"}).allowed
    assert fired(call(eng, arguments={"note": "a very long note"})) == [("big-note", "when")]


def test_when_with_effect_require_approval(make_engine) -> None:
    eng = make_engine({"id": "vip", "when": 'context.tier == "vip" && value > 100.0', "effect": "require_approval"})
    d = call(eng, value=150, context={"tier": "vip"}, actor="agent")
    assert d.result is DecisionResult.requires_approval and d.approval_id
    assert d.reason == 'condition `context.tier == "vip" && value > 100.0` holds, so rule vip requires approval for refund_payment'
    assert call(eng, value=50, context={"tier": "vip"}).allowed
    assert call(eng, value=150, context={"tier": "std"}).allowed


def test_when_sees_every_variable(make_engine, clock: Clock) -> None:
    clock.now = utc(2024, 3, 31, 1, 30)  # a Sunday
    eng = make_engine({
        "id": "all",
        "when": 'tool == "t" && actor == "a" && domain == "d" && target == "x" && args.n == 2 '
                '&& context.k == "v" && value == 3.5 && now.getDayOfWeek() == 0 && now.getHours() == 1',
    })  # fmt: skip
    full = {"actor": "a", "domain": "d", "target": "x", "arguments": {"n": 2}, "context": {"k": "v"}, "value": 3.5}
    assert fired(call(eng, "t", **full)) == [("all", "when")]
    assert call(eng, "t", **{**full, "target": "y"}).allowed
    clock.advance(3600)
    assert call(eng, "t", **full).allowed


def test_effect_without_when_or_limits_applies_to_every_call(make_engine) -> None:
    eng = make_engine({"id": "frozen", "tool": "deploy_*", "effect": "block"}, {"id": "ask", "tool": "drop_*", "effect": "require_approval"})
    d = call(eng, "deploy_prod")
    assert d.result is DecisionResult.blocked and d.reason == "rule frozen blocks every deploy_prod call"
    d = call(eng, "drop_table", actor="agent")
    assert d.result is DecisionResult.requires_approval and d.reason == "rule ask requires approval for every drop_table call"
    assert call(eng, "read_table").allowed


@pytest.mark.parametrize(
    ("when", "arguments"),
    [
        ('args.currency == "EUR"', {}),  # missing key
        ("args.amount", {"amount": 5}),  # not a boolean
        ("int(value) / args.n > 1", {"n": 0}),  # division by zero
        ('args.amount > "x"', {"amount": 5}),  # no such overload
    ],
)
def test_when_that_cannot_be_evaluated_fails_closed(make_engine, when: str, arguments: dict) -> None:
    eng = make_engine({"id": "careful", "when": when})
    d = call(eng, arguments=arguments, value=10, actor="agent")
    assert d.result is DecisionResult.blocked
    assert fired(d) == [("careful", "when")]
    assert d.reason.startswith(f"condition `{when}` of rule careful could not be evaluated (")
    assert d.reason.endswith("so it blocks the call")


def test_when_that_cannot_be_evaluated_with_approval_effect_asks(make_engine) -> None:
    eng = make_engine({"id": "careful", "when": "args.amount > 10", "effect": "require_approval"})
    d = call(eng, arguments={}, actor="agent")
    assert d.result is DecisionResult.requires_approval
    assert "could not be evaluated" in d.reason and "requires approval for the call" in d.reason


def test_when_with_a_non_utc_clock(tmp_path: Path) -> None:
    """`now` is judged in UTC whatever zone the clock reports in."""
    berlin = datetime(2024, 5, 6, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 10:00 UTC
    rules = parse_rules("version: 1\nrules:\n  - id: ten\n    when: now.getHours() == 10\n")
    with Engine(tmp_path / "x.db", rules=rules, clock=lambda: berlin) as eng:
        d = call(eng)
        assert d.result is DecisionResult.blocked
        assert d.reason == "condition `now.getHours() == 10` holds, so rule ten blocks refund_payment"
    rules = parse_rules("version: 1\nrules:\n  - id: noon\n    when: now.getHours() == 12\n")
    with Engine(tmp_path / "y.db", rules=rules, clock=lambda: berlin) as eng:
        assert call(eng).allowed


# -- status ---------------------------------------------------------------------------------


def test_paused_rule_is_ignored(make_engine) -> None:
    eng = make_engine({"id": "off", "max_value": 10, "status": "paused"})
    d = call(eng, value=50)
    assert d.allowed and d.matched_rules == [] and d.shadow_rules == []
    assert d.reason == "no rule applies to this call"


def test_paused_rule_does_not_count_calls(tmp_path: Path, clock: Clock) -> None:
    doc = "version: 1\nrules:\n  - id: hourly\n    max_per_hour: 1\n    status: {status}\n"
    with Engine(tmp_path / "x.db", clock=lambda: clock.now) as eng:
        eng.apply_rules(parse_rules(doc.format(status="paused")))
        for _ in range(3):
            assert call(eng, actor="a").allowed
        eng.apply_rules(parse_rules(doc.format(status="active")))
        assert call(eng, actor="a").allowed  # nothing was counted while paused
        assert call(eng, actor="a").result is DecisionResult.blocked


def test_shadow_rule_is_recorded_never_enforced(make_engine) -> None:
    eng = make_engine(
        {"id": "trial-cap", "max_value": 10, "status": "shadow"},
        {"id": "trial-ask", "require_approval_above": 5, "status": "shadow", "approval_ttl": "1h"},
    )
    d = call(eng, value=50)
    assert d.allowed and d.approval_id is None and d.approval_expires_at is None
    assert d.matched_rules == []
    assert [(m.rule_id, m.limit, m.shadow) for m in d.shadow_rules] == [
        ("trial-cap", "max_value", True), ("trial-ask", "require_approval_above", True)]  # fmt: skip
    stored = eng.get_decision(d.request_id)
    assert stored.shadow_rules == d.shadow_rules


def test_shadow_rate_limit_reports_without_blocking(make_engine) -> None:
    eng = make_engine({"id": "trial-rate", "max_per_hour": 1, "status": "shadow"})
    assert call(eng, actor="a").shadow_rules == []
    d = call(eng, actor="a")
    assert d.allowed
    assert [(m.rule_id, m.limit) for m in d.shadow_rules] == [("trial-rate", "max_per_hour")]


def test_shadow_beside_an_enforced_rule(make_engine) -> None:
    eng = make_engine({"id": "cap", "max_value": 100}, {"id": "trial", "max_value": 10, "status": "shadow"})
    d = call(eng, value=500)
    assert fired(d) == [("cap", "max_value")]
    assert [m.rule_id for m in d.shadow_rules] == ["trial"]
    assert d.reason == "refund_payment of 500.00 exceeds max_value 100 in rule cap"


# -- approvals: ttl and required count ------------------------------------------------------


def test_approval_ttl(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "ask", "require_approval_above": 10, "approval_ttl": "2h"})
    d = call(eng, value=50, actor="agent")
    assert d.approval_expires_at == clock.now + timedelta(hours=2)
    assert eng.get_approval(d.approval_id).expires_at == d.approval_expires_at  # type: ignore[arg-type]


def test_shortest_ttl_of_the_rules_that_ask_wins(make_engine, clock: Clock) -> None:
    eng = make_engine(
        {"id": "slow", "require_approval_above": 10, "approval_ttl": "2h"},
        {"id": "fast", "require_approval_above": 100, "approval_ttl": 1800},
        {"id": "idle", "require_approval_above": 1000, "approval_ttl": "1m"},  # does not fire below 1000
    )
    d = call(eng, value=500, actor="agent")
    assert d.approval_expires_at == clock.now + timedelta(minutes=30)
    d = call(eng, value=50, actor="agent")
    assert d.approval_expires_at == clock.now + timedelta(hours=2)


def test_default_approval_ttl_comes_from_the_engine(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "ask", "require_approval_above": 10}, default_approval_ttl=timedelta(minutes=5))
    assert call(eng, value=50, actor="agent").approval_expires_at == clock.now + timedelta(minutes=5)


def test_approvals_required(make_engine) -> None:
    eng = make_engine(
        {"id": "two", "require_approval_above": 10, "approvals_required": 2},
        {"id": "one", "require_approval_above": 5},
    )
    d = call(eng, value=50, actor="agent")
    aid = d.approval_id
    assert aid is not None
    assert eng.get_approval(aid).approvals_required == 2  # the highest of the rules that ask
    with pytest.raises(ConflictError):
        eng.resolve_approval(aid, "approved", approver="agent")  # not one's own call
    first = eng.resolve_approval(aid, "approved", approver="boss")
    assert first.status is ApprovalStatus.pending and len(first.votes) == 1
    with pytest.raises(DuplicateVote):
        eng.resolve_approval(aid, "approved", approver="boss")
    second = eng.resolve_approval(aid, "approved", approver="auditor")
    assert second.status is ApprovalStatus.approved
    assert call(eng, value=7, actor="agent").approval_id is not None
    assert eng.get_approval(call(eng, value=7, actor="agent").approval_id).approvals_required == 1  # type: ignore[arg-type]


# -- combining rules ------------------------------------------------------------------------


def test_most_restrictive_verdict_wins_and_all_fired_rules_are_listed(make_engine) -> None:
    eng = make_engine(
        {"id": "ask-big", "require_approval_above": 100},
        {"id": "cap", "max_value": 1000},
        {"id": "agents", "allow_actors": ["agent-*"]},
    )
    assert call(eng, value=50, actor="agent-1").allowed
    d = call(eng, value=500, actor="agent-1")
    assert d.result is DecisionResult.requires_approval
    assert fired(d) == [("ask-big", "require_approval_above")]
    d = call(eng, value=5000, actor="agent-1")
    assert d.result is DecisionResult.blocked
    assert d.approval_id is None and d.approval_expires_at is None
    assert fired(d) == [("ask-big", "require_approval_above"), ("cap", "max_value")]
    assert d.reason == "refund_payment of 5,000.00 exceeds max_value 1,000 in rule cap (and 1 more limit fired)"
    d = call(eng, value=5000, actor="human")
    assert fired(d) == [("ask-big", "require_approval_above"), ("cap", "max_value"), ("agents", "allow_actors")]
    assert d.reason.endswith("(and 2 more limits fired)")


def test_one_rule_can_fire_several_limits(make_engine, clock: Clock) -> None:
    clock.now = utc(2024, 5, 6, 3, 0)
    eng = make_engine({"id": "strict", "max_value": 10, "allowed_hours": {"start": 9, "end": 17}, "deny_actors": ["eve"]})
    d = call(eng, value=50, actor="eve")
    assert fired(d) == [("strict", "deny_actors"), ("strict", "allowed_hours"), ("strict", "max_value")]
    assert all(m.rule_version == 1 and m.effect == "block" for m in d.matched_rules)


def test_decision_is_stored_as_returned(make_engine) -> None:
    eng = make_engine({"id": "cap", "max_value": 10})
    d = call(eng, value=50)
    assert eng.get_decision(d.request_id) == d
    assert d.policy_version.startswith("file:")


# -- how the engine asks its counters (same verdicts, fewer round trips) ---------------------

COUNTING_RULES = [
    {"id": "hourly", "tool": "send_*", "max_per_hour": 3},
    {"id": "daily", "domain": "pay*", "max_per_day": 5},
    {"id": "budget", "domain": "payments", "budget": 1000},
    {"id": "cool", "tool": "write_file", "cooldown_seconds": 1.5},
    {"id": "cool-actors", "actors": ["ops-*"], "cooldown_seconds": 30},
    {"id": "approve", "domain": "payments", "require_approval_above": 400, "approval_ttl": "10m"},
    {"id": "paused", "max_per_hour": 0, "status": "paused"},
    {"id": "shadow-hourly", "tool": "send_*", "max_per_hour": 1, "status": "shadow"},
]


def _counting_calls(i: int) -> dict[str, Any]:
    actor = ["a", "b", "ops-1"][i % 3]
    kind = i % 4
    if kind == 0:
        return {"tool": "send_email", "actor": actor, "domain": "comms"}
    if kind == 1:
        return {"tool": "pay", "actor": actor, "domain": "payments", "value": float(50 + (i * 37) % 600)}
    if kind == 2:
        return {"tool": "write_file", "actor": actor, "target": f"/f/{i % 2}"}
    return {"tool": "pay", "actor": actor, "domain": "payouts"}  # no value: the budget asks nothing


def test_usage_lookups_are_exactly_the_questions_evaluate_asks() -> None:
    from clearance.model import Action
    from clearance.policy import RuleSet, evaluate, usage_lookups

    class Recording:
        def __init__(self) -> None:
            self.asked: list[tuple[Any, ...]] = []

        def count(self, rule_id: str, actor: str, since: datetime, cap: int | None = None) -> int:
            self.asked.append(("count", rule_id, actor, since, cap))
            return 0

        def total_value(self, rule_id: str, actor: str, since: datetime) -> float:
            self.asked.append(("total", rule_id, actor, since))
            return 0.0

        def last_at(self, rule_id: str, actor: str, target: str | None) -> datetime | None:
            self.asked.append(("last", rule_id, actor, target))
            return None

    rules = RuleSet.compile(RuleFile.model_validate({"rules": COUNTING_RULES}), "1")
    for i in range(24):
        action = Action.model_validate(_counting_calls(i))
        usage = Recording()
        evaluate(rules, action, T0, usage)
        planned = [lk[:4] if lk[0] == "last" else lk for lk in usage_lookups(rules, action, T0)]
        assert planned == usage.asked, action


def test_counters_read_ahead_decide_as_counters_read_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine reads the counters the rules will ask about in its first statement; turning
    that off (every question its own query) must not change a single verdict or reason."""
    from clearance.engine import core

    def run(name: str) -> list[tuple[str, str, list[str]]]:
        clock = Clock()
        eng = Engine(tmp_path / f"{name}.db", clock=lambda: clock.now)
        eng.apply_rules(RuleFile.model_validate({"rules": COUNTING_RULES}))
        out = []
        try:
            for i in range(90):
                d = eng.evaluate(_counting_calls(i))
                out.append((d.result.value, d.reason, [m.rule_id for m in d.shadow_rules]))
                if d.requires_approval and i % 2:
                    eng.resolve_approval(d.approval_id, "rejected" if i % 4 == 1 else "approved", approver="boss")  # type: ignore[arg-type]
                clock.advance(0.7 if i % 5 else 400)
        finally:
            eng.close()
        return out

    read_ahead = run("ahead")
    monkeypatch.setattr(core, "usage_lookups", lambda *a, **k: [])
    one_by_one = run("single")
    assert read_ahead == one_by_one
    assert {r for r, _, _ in read_ahead} == {"allowed", "blocked", "requires_approval"}


def test_cooldown_below_a_second(make_engine, clock: Clock) -> None:
    eng = make_engine({"id": "cool", "cooldown_seconds": 0.5})
    assert call(eng, actor="a").allowed
    clock.now = T0 + timedelta(microseconds=499_999)
    assert call(eng, actor="a").result is DecisionResult.blocked
    clock.now = T0 + timedelta(microseconds=500_000)
    assert call(eng, actor="a").allowed


@pytest.mark.parametrize(
    "patterns",
    [["refund"], ["refund_*"], ["*"], ["re?und"], ["[rs]efund"], ["[!r]efund"], ["a.b", "c+d"], ["(x)|y", "z*"],
     ["ops-*", "admin"], ["*-bot", "intern-??"], [], ["[a-c]*", "*[0-9]"]],
)  # fmt: skip
def test_compiled_globs_agree_with_fnmatchcase(patterns: list[str]) -> None:
    from fnmatch import fnmatchcase

    from clearance.policy.rules import glob_matcher

    names = ["refund", "refund_payment", "sefund", "xefund", "Refund", "re/und", "a.b", "axb", "c+d", "ccd",
             "(x)|y", "x", "y", "zz", "ops-1", "ops-", "admin", "admins", "sales-bot", "intern-42", "intern-4",
             "b7", "d7", "", "line\nbreak", "refund\n"]  # fmt: skip
    matches = glob_matcher(patterns)
    for name in names:
        assert matches(name) == any(fnmatchcase(name, p) for p in patterns), (patterns, name)


def test_condition_gets_only_the_variables_it_names() -> None:
    from clearance.policy.conditions import compile_condition

    assert compile_condition('args.to.endsWith("@x.example")', "r").names == ("args",)
    assert compile_condition("value > 10 && actor == 'tool'", "r").names == ("actor", "value")
    assert compile_condition("size(context) > 0 || now > timestamp('2024-01-01T00:00:00Z')", "r").names == ("context", "now")
