"""The embedded engine against a real SQLite file: decisions, executions, outcomes, approvals,
kill switch, memory hook and the asyncio front."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from clearance import AsyncEngine, Engine, RuleFile, parse_rules
from clearance.errors import (
    AlreadyClaimed,
    ApprovalExpired,
    ApprovalNotPending,
    ArgumentsMismatch,
    ConflictError,
    DuplicateVote,
    NotApproved,
    NotFound,
    UnknownRequest,
)
from clearance.memory import RiskEstimate
from clearance.model import (
    Action,
    ApprovalStatus,
    Decision,
    DecisionResult,
    ExecutionStatus,
    OutcomeStatus,
    Precedent,
)

T0 = datetime(2025, 3, 4, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


RULES = """
version: 1
rules:
  - id: payments-approval
    domain: payments
    tool: transfer_*
    require_approval_above: 1000
    max_value: 50000
    approval_ttl: 1h
  - id: payments-two-person
    domain: payments
    tool: wire_abroad
    effect: require_approval
    approvals_required: 2
  - id: no-deletes
    tool: delete_*
    effect: block
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "clearance.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(db: Path, clock: Clock) -> Engine:
    eng = Engine(db, clock=clock)
    eng.apply_rules(parse_rules(RULES))
    yield eng
    eng.close()


def transfer(amount: float, actor: str = "agent-1", **args: Any) -> dict[str, Any]:
    return {"tool": "transfer_funds", "domain": "payments", "actor": actor, "value": amount,
            "arguments": {"amount": amount, "to": "acct-42", **args}}  # fmt: skip


def event_count(eng: Engine) -> int:
    return eng.verify_audit().events_checked


def row_count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - test-controlled name


# -- decisions --------------------------------------------------------------------------------
def test_evaluate_returns_a_durable_decision(engine: Engine, db: Path, clock: Clock) -> None:
    decision = engine.evaluate(transfer(250))
    assert decision.result is DecisionResult.allowed and decision.allowed and not decision.requires_approval
    assert decision.decided_at == clock.now
    assert decision.policy_version == "1"

    other = Engine(db)  # a second engine on the same file sees it: it was committed
    try:
        again = other.get_decision(decision.request_id)
        assert again == decision
        assert other.get_action(decision.request_id).arguments == {"amount": 250, "to": "acct-42"}
    finally:
        other.close()


def test_decisions_of_every_kind_read_back(engine: Engine) -> None:
    for action in (transfer(10), transfer(5000), transfer(90000), {"tool": "delete_user", "arguments": {"id": 1}}):
        decision = engine.evaluate(action)
        assert engine.get_decision(decision.request_id) == decision
    assert engine.evaluate(transfer(5000)).result is DecisionResult.requires_approval
    blocked = engine.evaluate(transfer(90000))
    assert blocked.result is DecisionResult.blocked and "max_value" in blocked.reason


def test_request_ids_are_unique(engine: Engine) -> None:
    ids = [engine.evaluate({"tool": "lookup", "arguments": {"i": i}}).request_id for i in range(100)]
    found: list[str] = []
    lock = threading.Lock()

    def more() -> None:
        for i in range(25):
            rid = engine.evaluate({"tool": "lookup", "arguments": {"i": i}}).request_id
            with lock:
                found.append(rid)

    threads = [threading.Thread(target=more) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(ids + found)) == 200


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_never_repeats_its_parents_random_ids() -> None:
    """Ids draw on random bytes fetched in bulk: a child forked with part of the parent's
    supply unused must not hand out the same bytes as the parent."""
    from clearance.model import new_id, random_hex

    random_hex(1)  # the parent holds a supply with most of it unused
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, " ".join(random_hex(6) for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {random_hex(6) for _ in range(50)}
    assert len(child) == len(parent) == 50 and not child & parent
    assert len({new_id("req") for _ in range(10_000)}) == 10_000


# -- unknown ids --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda e, rid: e.report_outcome(rid, "succeeded"),
        lambda e, rid: e.report_outcome(rid, "failed", event_id="evt-for-nothing"),
        lambda e, rid: e.record_execution(rid, "executed"),
        lambda e, rid: e.claim_execution(rid, claimant="worker"),
        lambda e, rid: e.get_decision(rid),
        lambda e, rid: e.get_execution(rid),
        lambda e, rid: e.get_action(rid),
        lambda e, rid: e.outcomes(rid),
    ],
    ids=["report_outcome", "report_outcome_event_id", "record_execution", "claim_execution", "get_decision",
         "get_execution", "get_action", "outcomes"],  # fmt: skip
)
def test_unknown_request_id_is_refused_and_nothing_is_written(engine: Engine, db: Path, call: Any) -> None:
    engine.evaluate(transfer(10))
    before = event_count(engine)
    rid = "req_does_not_exist_42"
    with pytest.raises(UnknownRequest) as info:
        call(engine, rid)
    assert rid in str(info.value)
    assert info.value.request_id == rid
    assert event_count(engine) == before
    assert row_count(db, "outcomes") == 0
    assert row_count(db, "executions") == 0


# -- outcomes -------------------------------------------------------------------------------------
def test_report_outcome_is_idempotent_on_event_id(engine: Engine, db: Path) -> None:
    rid = engine.evaluate(transfer(10)).request_id
    first = engine.report_outcome(rid, "harmful", severity=0.8, cost=120.5, description="chargeback",
                                  reported_by="ops", event_id="ext-1")  # fmt: skip
    events = event_count(engine)
    second = engine.report_outcome(rid, "harmful", severity=0.8, cost=120.5, description="chargeback",
                                   reported_by="ops", event_id="ext-1")  # fmt: skip
    assert second == first
    assert engine.outcomes(rid) == [first]
    assert row_count(db, "outcomes") == 1
    assert event_count(engine) == events  # the repeat left no second event

    other = engine.evaluate(transfer(20)).request_id
    events = event_count(engine)
    with pytest.raises(ConflictError) as info:
        engine.report_outcome(other, "succeeded", event_id="ext-1")
    assert "ext-1" in str(info.value)
    assert engine.outcomes(other) == []
    assert event_count(engine) == events


def test_outcomes_without_event_id_are_distinct(engine: Engine) -> None:
    rid = engine.evaluate(transfer(10)).request_id
    a = engine.report_outcome(rid, "succeeded")
    b = engine.report_outcome(rid, "reverted", severity=0.3)
    assert a.event_id != b.event_id
    assert [o.status for o in engine.outcomes(rid)] == [OutcomeStatus.succeeded, OutcomeStatus.reverted]


def test_outcomes_may_arrive_late(engine: Engine, db: Path, clock: Clock) -> None:
    rid = engine.evaluate(transfer(10)).request_id
    observed = clock.now + timedelta(minutes=5)
    clock.advance(days=9)
    outcome = engine.report_outcome(rid, "reverted", severity=0.4, cost=10, observed_at=observed, reported_by="bank")
    assert outcome.observed_at == observed and outcome.recorded_at == clock.now
    other = Engine(db)
    try:
        (stored,) = other.outcomes(rid)
    finally:
        other.close()
    assert stored.observed_at == observed
    assert stored.recorded_at == clock.now
    assert stored.status is OutcomeStatus.reverted and stored.cost == 10 and stored.reported_by == "bank"


# -- approvals ----------------------------------------------------------------------------------
def test_approval_listing_and_resolution(engine: Engine) -> None:
    d1 = engine.evaluate(transfer(5000))
    d2 = engine.evaluate(transfer(7000))
    engine.evaluate(transfer(10))
    assert d1.requires_approval and d1.approval_id and d1.approval_expires_at == d1.decided_at + timedelta(hours=1)

    pending = engine.list_approvals()
    assert [a.approval_id for a in pending] == [d1.approval_id, d2.approval_id]
    a1 = engine.get_approval(d1.approval_id)
    assert a1.status is ApprovalStatus.pending
    assert a1.request_id == d1.request_id and a1.value == 5000 and a1.arguments == {"amount": 5000, "to": "acct-42"}
    assert a1.tool == "transfer_funds" and a1.actor == "agent-1" and a1.domain == "payments"
    assert "require_approval_above" in a1.reason

    approved = engine.resolve_approval(d1.approval_id, "approved", approver="alice", comment="known vendor")
    assert approved.status is ApprovalStatus.approved
    assert approved.resolved_by == "alice" and approved.comment == "known vendor" and approved.resolved_at is not None
    assert [(v.approver, v.resolution, v.comment) for v in approved.votes] == [("alice", "approved", "known vendor")]

    rejected = engine.resolve_approval(d2.approval_id, ApprovalStatus.rejected, approver="bob", comment="no")
    assert rejected.status is ApprovalStatus.rejected and rejected.resolved_by == "bob"

    assert engine.list_approvals() == []
    assert {a.approval_id: a.status for a in engine.list_approvals(None)} == {
        d1.approval_id: ApprovalStatus.approved, d2.approval_id: ApprovalStatus.rejected}  # fmt: skip
    assert [a.approval_id for a in engine.list_approvals("approved")] == [d1.approval_id]

    with pytest.raises(ApprovalNotPending) as info:
        engine.resolve_approval(d1.approval_id, "approved", approver="carol")
    assert "approved" in str(info.value) and "alice" in str(info.value)
    with pytest.raises(ApprovalNotPending):
        engine.resolve_approval(d2.approval_id, "approved", approver="carol")
    assert engine.get_approval(d2.approval_id).status is ApprovalStatus.rejected


def test_resolve_bad_arguments(engine: Engine) -> None:
    d = engine.evaluate(transfer(5000))
    with pytest.raises(ValueError):
        engine.resolve_approval(d.approval_id, "expired", approver="alice")
    with pytest.raises(ValueError):
        engine.resolve_approval(d.approval_id, "approved", approver="")
    assert engine.get_approval(d.approval_id).status is ApprovalStatus.pending


def test_unknown_approval_id(engine: Engine) -> None:
    with pytest.raises(NotFound) as info:
        engine.get_approval("apr_nope")
    assert "apr_nope" in str(info.value)
    before = event_count(engine)
    with pytest.raises(NotFound):
        engine.resolve_approval("apr_nope", "approved", approver="alice")
    assert event_count(engine) == before


def test_expired_approval_cannot_be_resolved(engine: Engine, clock: Clock) -> None:
    d = engine.evaluate(transfer(5000))
    clock.advance(minutes=59)
    assert engine.get_approval(d.approval_id).status is ApprovalStatus.pending
    clock.advance(minutes=2)
    with pytest.raises(ApprovalExpired) as info:
        engine.resolve_approval(d.approval_id, "approved", approver="alice")
    assert d.approval_id in str(info.value)
    expired = engine.get_approval(d.approval_id)
    assert expired.status is ApprovalStatus.expired and expired.resolved_by is None and expired.votes == []
    assert engine.list_approvals() == []
    with pytest.raises(ApprovalNotPending):
        engine.resolve_approval(d.approval_id, "approved", approver="alice")
    with pytest.raises(NotApproved):
        engine.claim_execution(d.request_id, claimant="worker")
    assert [e.type for e in engine.audit_events(type="approval.expired")] == ["approval.expired"]


def test_expire_approvals_and_listing_expire_due_ones(engine: Engine, clock: Clock) -> None:
    d = engine.evaluate(transfer(5000))
    clock.advance(hours=2)
    d2 = engine.evaluate(transfer(6000))
    assert [a.approval_id for a in engine.list_approvals()] == [d2.approval_id]
    assert engine.get_approval(d.approval_id).status is ApprovalStatus.expired
    assert engine.expire_approvals() == []


def test_two_approvers_needed(engine: Engine) -> None:
    d = engine.evaluate({"tool": "wire_abroad", "domain": "payments", "actor": "agent-1", "arguments": {"iban": "X"}})
    assert d.requires_approval
    first = engine.resolve_approval(d.approval_id, "approved", approver="alice")
    assert first.status is ApprovalStatus.pending and first.approvals_required == 2 and len(first.votes) == 1
    with pytest.raises(DuplicateVote):
        engine.resolve_approval(d.approval_id, "approved", approver="alice")
    with pytest.raises(NotApproved):
        engine.claim_execution(d.request_id, claimant="worker")
    second = engine.resolve_approval(d.approval_id, "approved", approver="bob", comment="ok")
    assert second.status is ApprovalStatus.approved and second.resolved_by == "bob"
    assert [v.approver for v in second.votes] == ["alice", "bob"]
    assert engine.claim_execution(d.request_id, claimant="worker").status is ExecutionStatus.unknown


def test_one_rejection_closes_a_two_person_approval(engine: Engine) -> None:
    d = engine.evaluate({"tool": "wire_abroad", "domain": "payments", "actor": "agent-1"})
    engine.resolve_approval(d.approval_id, "approved", approver="alice")
    assert engine.resolve_approval(d.approval_id, "rejected", approver="bob").status is ApprovalStatus.rejected


def test_actor_cannot_approve_its_own_call(engine: Engine) -> None:
    d = engine.evaluate(transfer(5000, actor="mallory"))
    before = event_count(engine)
    with pytest.raises(ConflictError) as info:
        engine.resolve_approval(d.approval_id, "approved", approver="mallory")
    assert "mallory" in str(info.value)
    assert engine.get_approval(d.approval_id).status is ApprovalStatus.pending
    assert event_count(engine) == before


# -- executions ---------------------------------------------------------------------------------
def test_claim_is_bound_to_the_approved_arguments(engine: Engine) -> None:
    d = engine.evaluate(transfer(5000))
    engine.resolve_approval(d.approval_id, "approved", approver="alice")
    with pytest.raises(ArgumentsMismatch):
        engine.claim_execution(d.request_id, claimant="worker", arguments={"amount": 5000, "to": "acct-666"})
    assert engine.get_execution(d.request_id) is None
    # The same arguments in another key order are the same arguments.
    claim = engine.claim_execution(d.request_id, claimant="worker", arguments={"to": "acct-42", "amount": 5000})
    assert claim.claimed_by == "worker"


def test_claim_refused_unless_allowed_or_approved(engine: Engine) -> None:
    pending = engine.evaluate(transfer(5000))
    with pytest.raises(NotApproved) as info:
        engine.claim_execution(pending.request_id, claimant="worker")
    assert "pending" in str(info.value)

    rejected = engine.evaluate(transfer(6000))
    engine.resolve_approval(rejected.approval_id, "rejected", approver="alice")
    with pytest.raises(NotApproved) as info:
        engine.claim_execution(rejected.request_id, claimant="worker")
    assert "rejected" in str(info.value)

    blocked = engine.evaluate({"tool": "delete_user", "arguments": {"id": 7}})
    assert blocked.result is DecisionResult.blocked
    with pytest.raises(NotApproved) as info:
        engine.claim_execution(blocked.request_id, claimant="worker")
    assert "blocked" in str(info.value)
    for d in (pending, rejected, blocked):
        assert engine.get_execution(d.request_id) is None


def test_claim_without_report_stays_unknown_and_is_never_handed_out_again(engine: Engine, db: Path) -> None:
    d = engine.evaluate(transfer(10))
    claim = engine.claim_execution(d.request_id, claimant="worker-a", arguments=transfer(10)["arguments"])
    assert claim.status is ExecutionStatus.unknown and claim.claimed_by == "worker-a"
    assert engine.get_execution(d.request_id).status is ExecutionStatus.unknown
    with pytest.raises(AlreadyClaimed) as info:
        engine.claim_execution(d.request_id, claimant="worker-b")
    assert "worker-a" in str(info.value)
    other = Engine(db)  # another process restarting after a crash sees the same
    try:
        assert other.get_execution(d.request_id).status is ExecutionStatus.unknown
        with pytest.raises(AlreadyClaimed):
            other.claim_execution(d.request_id, claimant="worker-c")
    finally:
        other.close()


def test_record_execution_after_claim(engine: Engine) -> None:
    d = engine.evaluate(transfer(10))
    engine.claim_execution(d.request_id, claimant="worker")
    done = engine.record_execution(d.request_id, "executed", {"tx": "abc"})
    assert done.status is ExecutionStatus.executed and done.claimed_by == "worker" and done.result_summary == {"tx": "abc"}
    assert engine.record_execution(d.request_id, "executed") == done  # same final status: idempotent
    with pytest.raises(ConflictError):
        engine.record_execution(d.request_id, "failed", error="late")
    with pytest.raises(AlreadyClaimed):
        engine.claim_execution(d.request_id, claimant="worker-2")


# -- kill switch --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "named", "hit", "miss"),
    [
        ({}, "everything", transfer(10), None),
        ({"domain": "payments"}, "domain payments", transfer(10), {"tool": "lookup", "domain": "crm"}),
        ({"tool": "transfer_funds"}, "tool transfer_funds", transfer(10), {"tool": "transfer_other", "domain": "payments"}),
        ({"actor": "agent-1"}, "actor agent-1", transfer(10), transfer(10, actor="agent-2")),
    ],
    ids=["all", "domain", "tool", "actor"],
)
def test_kill_switch(engine: Engine, scope: dict[str, str], named: str, hit: dict[str, Any], miss: dict[str, Any] | None) -> None:
    assert engine.evaluate(hit).allowed
    switch = engine.activate_kill_switch(**scope, reason="incident 7", by="oncall")
    assert engine.kill_switches() == [switch]
    blocked = engine.evaluate(hit)
    assert blocked.result is DecisionResult.blocked
    assert "kill switch" in blocked.reason and named in blocked.reason and "incident 7" in blocked.reason
    if miss is not None:
        assert engine.evaluate(miss).allowed
    assert engine.deactivate_kill_switch(**scope, by="oncall") is True
    assert engine.kill_switches() == []
    assert engine.evaluate(hit).allowed
    assert engine.deactivate_kill_switch(**scope) is False


def test_kill_switch_outranks_approval_and_takes_one_scope(engine: Engine) -> None:
    engine.activate_kill_switch(domain="payments")
    assert engine.evaluate(transfer(5000)).result is DecisionResult.blocked
    with pytest.raises(ValueError):
        engine.activate_kill_switch(domain="payments", tool="transfer_funds")


# -- rules ---------------------------------------------------------------------------------------
def test_apply_rules_versions(engine: Engine) -> None:
    same = engine.apply_rules(parse_rules(RULES))
    assert same.unchanged and same.version == 1
    doc = parse_rules(RULES).model_dump(mode="json", exclude_none=True)
    doc["rules"][0]["require_approval_above"] = 2000
    doc["rules"].append({"id": "read-cap", "tool": "lookup", "max_per_hour": 3})
    info = engine.apply_rules(RuleFile.model_validate(doc))
    assert (info.version, info.added, info.changed, info.removed) == (2, ["read-cap"], ["payments-approval"], [])
    assert engine.evaluate(transfer(1500)).allowed
    assert [p["version"] for p in engine.policy_versions()] == [1, 2]


def test_rate_limit_and_released_slots(engine: Engine) -> None:
    engine.apply_rules(RuleFile.model_validate({"rules": [{"id": "cap", "tool": "lookup", "max_per_hour": 2}]}))
    a, b = (engine.evaluate({"tool": "lookup", "actor": "x"}) for _ in range(2))
    assert a.allowed and b.allowed
    third = engine.evaluate({"tool": "lookup", "actor": "x"})
    assert third.result is DecisionResult.blocked and "max_per_hour 2" in third.reason
    assert engine.evaluate({"tool": "lookup", "actor": "y"}).allowed
    engine.record_execution(a.request_id, "not_run")  # gives its slot back
    assert engine.evaluate({"tool": "lookup", "actor": "x"}).allowed


# -- memory hook -----------------------------------------------------------------------------
class RecordingMemory:
    """A memory that answers a fixed estimate and records what the engine feeds it."""

    learns = True

    def __init__(self, risk: float = 0.2, evidence: float = 3.0) -> None:
        self.cursor = 0
        self.risk, self.evidence = risk, evidence
        self.assessed: list[tuple[Action, int]] = []
        self.seen: list[tuple[str, str | None]] = []

    def ingest(self, events: Any) -> None:
        for ev in events:
            if ev["seq"] > self.cursor:
                self.cursor = ev["seq"]
                self.seen.append((ev["type"], ev["request_id"]))

    def assess(self, action: Action, now: datetime, **_: Any) -> RiskEstimate:
        self.assessed.append((action, threading.get_ident()))
        precedent = Precedent(request_id="req_old", similarity=0.9, outcome="harmful", severity=0.8, cost=40.0)
        return RiskEstimate(risk=self.risk, evidence=self.evidence, precedents=[precedent], summary="similar calls went badly")


def test_memory_hook(db: Path) -> None:
    memory = RecordingMemory()
    with Engine(db, memory=memory) as engine:
        decision = engine.evaluate(transfer(10))
        assert decision.risk_score == 0.2 and decision.evidence == 3.0 and decision.allowed
        assert decision.risk_summary == "similar calls went badly" and decision.rules_result is DecisionResult.allowed
        assert [p.request_id for p in engine.precedents(decision.request_id)] == ["req_old"]
        assert engine.get_decision(decision.request_id).risk_score == 0.2
        assert memory.assessed[0][0].tool == "transfer_funds"
        engine.report_outcome(decision.request_id, "succeeded", event_id="o-1")
        engine.evaluate(transfer(11))
        # Memory is fed from the audit log, in order, before the next decision.
        assert ("decision.made", decision.request_id) in memory.seen
        assert ("outcome.reported", decision.request_id) in memory.seen
        types = [t for t, _ in memory.seen]
        assert types.index("decision.made") < types.index("outcome.reported")


def test_memory_learns_what_another_engine_records(db: Path) -> None:
    memory = RecordingMemory()
    with Engine(db, memory=memory) as mine, Engine(db) as theirs:
        mine.evaluate(transfer(1))
        elsewhere = theirs.evaluate(transfer(2))
        theirs.report_outcome(elsewhere.request_id, "harmful", event_id="o-2")
        mine.evaluate(transfer(3))
        assert ("outcome.reported", elsewhere.request_id) in memory.seen


def test_memory_is_told_of_recorded_executions_unless_it_missed_an_event_before_them(db: Path) -> None:
    """record_executions hands its events to memory as evaluate does (the next decision need not
    read them back), but never past a gap: an event another engine wrote first is read from the log."""
    memory = RecordingMemory()
    with Engine(db, memory=memory) as mine, Engine(db) as theirs:
        first = mine.evaluate(transfer(1))
        mine.record_executions([(first.request_id, "executed", None, None)])
        assert memory.seen[-1] == ("execution.recorded", first.request_id)  # told at once, no decision since
        second = mine.evaluate(transfer(2))
        elsewhere = theirs.evaluate(transfer(3))
        theirs.report_outcome(elsewhere.request_id, "harmful", event_id="o-3")
        mine.record_executions([(second.request_id, "executed", None, None)])
        assert ("execution.recorded", second.request_id) not in memory.seen  # it would skip their events
        mine.evaluate(transfer(4))
        assert ("outcome.reported", elsewhere.request_id) in memory.seen
        assert ("execution.recorded", second.request_id) in memory.seen


def test_memory_tightens_an_allowed_call(db: Path) -> None:
    with Engine(db, memory=RecordingMemory(risk=0.95)) as engine:
        blocked = engine.evaluate(transfer(10))
        assert blocked.result is DecisionResult.blocked and blocked.rules_result is DecisionResult.allowed
        assert blocked.reason.startswith("similar calls went badly: risk 0.95 is above block_above 0.9")
    with Engine(db, memory=RecordingMemory(risk=0.7)) as engine:
        held = engine.evaluate(transfer(10))
        assert held.result is DecisionResult.requires_approval and held.approval_id is not None
    with Engine(db, memory=RecordingMemory(risk=0.95, evidence=0.5)) as engine:
        # Too little evidence to block on: a person is asked instead.
        assert engine.evaluate(transfer(10)).result is DecisionResult.requires_approval


def test_memory_never_loosens_rules_and_can_be_switched_off(db: Path) -> None:
    with Engine(db, memory=RecordingMemory(risk=0.0)) as engine:
        engine.apply_rules(parse_rules(RULES))
        assert engine.evaluate(transfer(5000)).result is DecisionResult.requires_approval
    off = "version: 1\nrisk: {enabled: false}\n"
    with Engine(db, memory=RecordingMemory(risk=0.99)) as engine:
        engine.apply_rules(parse_rules(off))
        d = engine.evaluate(transfer(10))
        assert d.allowed and d.risk_score == 0.99


def test_memory_risk_is_clamped(db: Path) -> None:
    class Wild(RecordingMemory):
        def assess(self, action: Action, now: datetime, **_: Any) -> RiskEstimate:
            return RiskEstimate(risk=3.5)

    with Engine(db, memory=Wild()) as engine:
        assert engine.evaluate(transfer(10)).risk_score == 1.0


# -- asyncio ----------------------------------------------------------------------------------
def test_async_engine_flow(db: Path) -> None:
    memory = RecordingMemory()

    async def main() -> tuple[int, list[str]]:
        async with AsyncEngine(store=db, memory=memory) as eng:
            await eng.apply_rules(parse_rules(RULES))
            allowed = await eng.evaluate(transfer(10))
            assert allowed.allowed
            assert await eng.get_decision(allowed.request_id) == allowed
            await eng.claim_execution(allowed.request_id, claimant="async-worker")
            await eng.record_execution(allowed.request_id, "executed", {"ok": True})
            assert (await eng.get_execution(allowed.request_id)).status is ExecutionStatus.executed
            await eng.report_outcome(allowed.request_id, "succeeded", event_id="a-1")
            assert len(await eng.outcomes(allowed.request_id)) == 1

            held = await eng.evaluate(transfer(5000))
            assert [a.approval_id for a in await eng.list_approvals()] == [held.approval_id]
            approved = await eng.resolve_approval(held.approval_id, "approved", approver="alice")
            assert approved.status is ApprovalStatus.approved
            assert (await eng.get_approval(held.approval_id)).status is ApprovalStatus.approved
            await eng.claim_execution(held.request_id, claimant="async-worker", arguments=transfer(5000)["arguments"])

            await eng.activate_kill_switch(tool="transfer_funds")
            assert (await eng.evaluate(transfer(10))).result is DecisionResult.blocked
            assert await eng.deactivate_kill_switch(tool="transfer_funds")
            report = await eng.verify_audit()
            assert report.ok
            types = [e.type for e in await eng.audit_events(limit=1000)]
            return threading.get_ident(), types

    loop_thread, types = asyncio.run(main())
    assert "decision.made" in types and "approval.resolved" in types
    assert memory.assessed and all(ident != loop_thread for _, ident in memory.assessed)


# -- model -------------------------------------------------------------------------------------
def test_decision_round_trips_through_its_own_json(engine: Engine) -> None:
    d = engine.evaluate(transfer(10))
    assert Decision.model_validate(d.model_dump(mode="json")) == d


def test_decision_json_with_contradicting_derived_fields_is_refused(engine: Engine) -> None:
    from pydantic import ValidationError

    data = engine.evaluate(transfer(10)).model_dump(mode="json")
    assert data["allowed"] is True
    with pytest.raises(ValidationError, match="contradict"):
        Decision.model_validate({**data, "result": "blocked"})


def _suspend(engine: Engine, *approval_ids: str) -> str:
    run_id = "run_test"
    engine.save_run(run_id, {"run_id": run_id, "trace_id": "trc_test", "pending": list(approval_ids)}, list(approval_ids))
    return run_id


def test_a_run_goes_to_one_resumer_at_a_time(engine: Engine) -> None:
    from clearance.errors import RunBusy

    first, second = (engine.evaluate(transfer(5000)).approval_id for _ in range(2))
    run_id = _suspend(engine, first, second)
    assert engine.take_run(first)["run_id"] == run_id
    with pytest.raises(RunBusy, match="being resumed"):
        engine.take_run(second, wait_seconds=0)
    engine.release_run(run_id)
    assert engine.take_run(second, wait_seconds=0)["run_id"] == run_id
    with pytest.raises(AlreadyClaimed):
        engine.take_run(second, wait_seconds=0)


def test_a_lapsed_lease_lets_the_next_resumer_in(engine: Engine, clock: Clock) -> None:
    first, second = (engine.evaluate(transfer(5000)).approval_id for _ in range(2))
    _suspend(engine, first, second)
    engine.take_run(first)  # this resumer crashes and never saves or releases
    clock.advance(minutes=11)
    assert engine.take_run(second, wait_seconds=0)["run_id"] == "run_test"


def test_an_approval_set_in_the_database_without_its_audit_event_cannot_be_claimed(engine: Engine, db: Path) -> None:
    d = engine.evaluate(transfer(5000, to="acct-9"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE approvals SET status = 'approved', resolved_by = 'mallory' WHERE approval_id = ?", (d.approval_id,))
    with pytest.raises(NotApproved, match="no intact approval"):
        engine.claim_execution(d.request_id, claimant="worker", arguments={"amount": 5000, "to": "acct-9"})
    assert engine.get_execution(d.request_id) is None


def test_record_executions_commits_the_good_reports_and_returns_errors_for_the_rest(engine: Engine) -> None:
    a, b = engine.evaluate(transfer(10)), engine.evaluate(transfer(20))
    engine.record_execution(b.request_id, "executed")
    before = event_count(engine)
    results = engine.record_executions([
        (a.request_id, "executed", {"ok": True}, None),
        ("req_missing", "executed", None, None),
        (b.request_id, "failed", None, "boom"),  # conflicts with the recorded 'executed'
    ])  # fmt: skip
    assert results[0].status.value == "executed"  # type: ignore[union-attr]
    assert isinstance(results[1], UnknownRequest)
    assert isinstance(results[2], ConflictError)
    assert engine.get_execution(a.request_id).status.value == "executed"  # type: ignore[union-attr]
    assert engine.get_execution(b.request_id).status.value == "executed"  # type: ignore[union-attr]
    assert event_count(engine) == before + 1
