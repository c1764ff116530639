"""Which calls hold a slot under counting rules (max_per_hour, max_per_day, budget).

Allowed calls count; blocked ones never do; a call recorded as not run gives its slot back;
a pending approval holds its slot until it is rejected or expires; an approved one keeps it.
Each scenario uses a capacity of exactly two calls, so "one more fits" and "full" can both be
asserted.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from clearance.engine.core import Engine
from clearance.errors import ApprovalExpired, ApprovalNotPending, ConflictError
from clearance.model import ApprovalStatus, Decision, DecisionResult
from clearance.policy import RuleFile

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=timezone.utc)
TTL = timedelta(minutes=10)  # well inside every counting window, so expiry is what frees the slot
VALUE = 50.0

#: Counting rules, each with room for exactly two calls of VALUE.
LIMITS = {
    "max_per_hour": {"id": "cap", "tool": "pay", "max_per_hour": 2},
    "max_per_day": {"id": "cap", "tool": "pay", "max_per_day": 2},
    "budget": {"id": "cap", "tool": "pay", "budget": 2 * VALUE},
}
REVIEW = {"id": "review", "tool": "pay", "when": '"review" in args', "effect": "require_approval", "approval_ttl": "10m"}
DENY = {"id": "deny", "tool": "pay", "when": '"bad" in args', "effect": "block"}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=sorted(LIMITS))
def limit(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def engine(tmp_path: Path, clock: Clock, limit: str):
    rules = RuleFile.model_validate({"version": 1, "rules": [LIMITS[limit], REVIEW, DENY]})
    eng = Engine(tmp_path / "x.db", rules=rules, clock=lambda: clock.now)
    yield eng
    eng.close()


def pay(engine: Engine, *flags: str, actor: str = "agent", value: float = VALUE) -> Decision:
    return engine.evaluate({"tool": "pay", "actor": actor, "value": value, "arguments": {f: True for f in flags}})


def assert_full(engine: Engine, limit: str) -> None:
    d = pay(engine)
    assert d.result is DecisionResult.blocked, d.reason
    assert [(m.rule_id, m.limit) for m in d.matched_rules] == [("cap", limit)]


def assert_room_for(engine: Engine, limit: str, n: int) -> None:
    """Exactly ``n`` more calls fit (each one taken), then the rule is full."""
    for i in range(n):
        d = pay(engine)
        assert d.allowed, f"call {i + 1} of {n}: {d.reason}"
    assert_full(engine, limit)


def test_allowed_decisions_count(engine: Engine, limit: str) -> None:
    assert_room_for(engine, limit, 2)
    # Per actor: another actor has its own room.
    assert pay(engine, actor="other").allowed


def test_blocked_decisions_never_count(engine: Engine, limit: str) -> None:
    assert pay(engine).allowed
    for _ in range(3):  # blocked by another rule
        d = pay(engine, "bad")
        assert d.result is DecisionResult.blocked and [m.rule_id for m in d.matched_rules] == ["deny"]
    assert_room_for(engine, limit, 1)  # the three blocked calls took nothing


def test_blocked_calls_do_not_fill_a_freed_slot(engine: Engine, limit: str) -> None:
    a = pay(engine)
    assert pay(engine).allowed
    for _ in range(3):
        assert_full(engine, limit)
    engine.record_execution(a.request_id, "not_run")
    assert_room_for(engine, limit, 1)


def test_budget_call_too_big_does_not_count(tmp_path: Path, clock: Clock) -> None:
    rules = RuleFile.model_validate({"version": 1, "rules": [LIMITS["budget"]]})
    with Engine(tmp_path / "x.db", rules=rules, clock=lambda: clock.now) as eng:
        assert pay(eng, value=1000).result is DecisionResult.blocked
        assert_room_for(eng, "budget", 2)


@pytest.mark.parametrize("status", ["not_run"])  # rejected and blocked are only for calls that were so (test_execution_states)
def test_not_run_gives_the_slot_back(engine: Engine, limit: str, status: str) -> None:
    a, b = pay(engine), pay(engine)
    assert a.allowed and b.allowed
    assert_full(engine, limit)
    engine.record_execution(a.request_id, status)
    engine.record_execution(a.request_id, status)  # idempotent: nothing more is freed
    assert_room_for(engine, limit, 1)


@pytest.mark.parametrize("status", ["executed", "failed"])
def test_calls_that_ran_keep_their_slot(engine: Engine, limit: str, status: str) -> None:
    a, b = pay(engine), pay(engine)
    engine.record_execution(a.request_id, status)
    engine.record_execution(b.request_id, status)
    assert_full(engine, limit)
    with pytest.raises(ConflictError):
        engine.record_execution(a.request_id, "not_run")  # a call that ran cannot be taken back
    assert_full(engine, limit)


def test_claimed_then_not_run_gives_the_slot_back(engine: Engine, limit: str) -> None:
    a, _ = pay(engine), pay(engine)
    engine.claim_execution(a.request_id, claimant="worker-1")
    assert_full(engine, limit)
    engine.record_execution(a.request_id, "not_run")
    assert_room_for(engine, limit, 1)


def test_pending_approval_reserves_its_slot(engine: Engine, limit: str) -> None:
    pending = pay(engine, "review")
    assert pending.requires_approval and pending.approval_id
    assert_room_for(engine, limit, 1)


def test_rejected_approval_releases_its_slot(engine: Engine, limit: str) -> None:
    pending = pay(engine, "review")
    assert_room_for(engine, limit, 1)
    approval = engine.resolve_approval(pending.approval_id, "rejected", approver="boss", comment="no")  # type: ignore[arg-type]
    assert approval.status is ApprovalStatus.rejected and approval.resolved_by == "boss"
    assert_room_for(engine, limit, 1)


def test_approved_approval_keeps_its_slot(engine: Engine, limit: str) -> None:
    pending = pay(engine, "review")
    assert_room_for(engine, limit, 1)
    approval = engine.resolve_approval(pending.approval_id, "approved", approver="boss")  # type: ignore[arg-type]
    assert approval.status is ApprovalStatus.approved
    assert_full(engine, limit)
    engine.claim_execution(pending.request_id, claimant="worker")
    engine.record_execution(pending.request_id, "executed")
    assert_full(engine, limit)


def test_approved_but_not_run_gives_the_slot_back(engine: Engine, limit: str) -> None:
    pending = pay(engine, "review")
    engine.resolve_approval(pending.approval_id, "approved", approver="boss")  # type: ignore[arg-type]
    assert_room_for(engine, limit, 1)
    engine.record_execution(pending.request_id, "not_run")
    assert_room_for(engine, limit, 1)


def test_actor_cannot_resolve_and_the_slot_stays_reserved(engine: Engine, limit: str) -> None:
    pending = pay(engine, "review")
    for resolution in ("approved", "rejected"):
        with pytest.raises(ConflictError):
            engine.resolve_approval(pending.approval_id, resolution, approver="agent")  # type: ignore[arg-type]
    assert engine.get_approval(pending.approval_id).status is ApprovalStatus.pending  # type: ignore[arg-type]
    assert_room_for(engine, limit, 1)


@pytest.mark.parametrize("how", ["expire_approvals", "list_approvals"])
def test_expired_approval_releases_its_slot(engine: Engine, clock: Clock, limit: str, how: str) -> None:
    pending = pay(engine, "review")
    assert pending.approval_expires_at == clock.now + TTL
    assert_room_for(engine, limit, 1)
    clock.now = pending.approval_expires_at  # type: ignore[assignment]
    if how == "expire_approvals":
        expired = engine.expire_approvals()
        assert [(a.approval_id, a.status) for a in expired] == [(pending.approval_id, ApprovalStatus.expired)]
    else:
        assert engine.list_approvals() == []
        assert [a.approval_id for a in engine.list_approvals("expired")] == [pending.approval_id]
    assert_room_for(engine, limit, 1)
    with pytest.raises(ApprovalNotPending, match="expired"):
        engine.resolve_approval(pending.approval_id, "approved", approver="boss")  # type: ignore[arg-type]
    assert_full(engine, limit)  # a late answer does not take the slot back


def test_resolving_an_expired_approval_always_raises_approval_expired(tmp_path: Path, clock: Clock) -> None:
    rules = RuleFile.model_validate({"version": 1, "rules": [REVIEW]})
    with Engine(tmp_path / "x.db", rules=rules, clock=lambda: clock.now) as eng:
        pending = pay(eng, "review")
        clock.advance(TTL.total_seconds())
        eng.expire_approvals()
        with pytest.raises(ApprovalExpired):
            eng.resolve_approval(pending.approval_id, "approved", approver="boss")  # type: ignore[arg-type]


def test_a_lapsed_reservation_frees_its_slot_before_any_sweep(engine: Engine, clock: Clock, limit: str) -> None:
    pay(engine, "review")
    clock.advance(TTL.total_seconds() + 1)  # nothing has marked the approval expired yet
    assert_room_for(engine, limit, 2)  # the lapsed reservation no longer holds one of the two slots


def test_not_yet_expired_approval_keeps_its_slot(engine: Engine, clock: Clock, limit: str) -> None:
    pending = pay(engine, "review")
    clock.now = pending.approval_expires_at - timedelta(seconds=1)  # type: ignore[operator]
    assert engine.expire_approvals() == []
    assert_room_for(engine, limit, 1)


def test_resolving_after_the_deadline_expires_and_releases(engine: Engine, clock: Clock, limit: str) -> None:
    pending = pay(engine, "review")
    clock.advance(TTL.total_seconds() + 1)
    with pytest.raises(ApprovalExpired):
        engine.resolve_approval(pending.approval_id, "approved", approver="boss")  # type: ignore[arg-type]
    assert engine.get_approval(pending.approval_id).status is ApprovalStatus.expired  # type: ignore[arg-type]
    assert_room_for(engine, limit, 2)


def test_rejection_after_a_first_vote_releases(tmp_path: Path, clock: Clock, limit: str) -> None:
    review = {**REVIEW, "approvals_required": 2}
    rules = RuleFile.model_validate({"version": 1, "rules": [LIMITS[limit], review]})
    with Engine(tmp_path / "x.db", rules=rules, clock=lambda: clock.now) as eng:
        pending = pay(eng, "review")
        aid: Any = pending.approval_id
        assert eng.resolve_approval(aid, "approved", approver="boss").status is ApprovalStatus.pending
        assert_room_for(eng, limit, 1)
        assert eng.resolve_approval(aid, "rejected", approver="auditor").status is ApprovalStatus.rejected
        assert_room_for(eng, limit, 1)


def test_cooldown_is_reserved_by_a_pending_approval(tmp_path: Path, clock: Clock) -> None:
    rules = RuleFile.model_validate({"version": 1, "rules": [{"id": "cool", "tool": "pay", "cooldown_seconds": 600}, REVIEW]})
    with Engine(tmp_path / "x.db", rules=rules, clock=lambda: clock.now) as eng:
        pending = eng.evaluate({"tool": "pay", "actor": "agent", "target": "acct-1", "arguments": {"review": True}})
        assert pending.requires_approval
        clock.advance(60)
        d = eng.evaluate({"tool": "pay", "actor": "agent", "target": "acct-1"})
        assert [(m.rule_id, m.limit) for m in d.matched_rules] == [("cool", "cooldown_seconds")]
        eng.resolve_approval(pending.approval_id, "rejected", approver="boss")  # type: ignore[arg-type]
        assert eng.evaluate({"tool": "pay", "actor": "agent", "target": "acct-1"}).allowed
