"""The vocabulary of clearance as typed values.

Every layer speaks in these types: the policy judges an :class:`Action`, the engine returns a
:class:`Decision`, people resolve an :class:`Approval`, the world reports an :class:`Outcome`,
and each of those steps leaves an :class:`Event` in the audit trail. They are plain pydantic
models so that the CLI, the HTTP API and the adapters serialise them the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, computed_field, model_validator

__all__ = [
    "Action",
    "Approval",
    "Attempt",
    "ApprovalStatus",
    "ApprovalVote",
    "Decision",
    "DecisionResult",
    "Delivery",
    "Event",
    "Execution",
    "ExecutionStatus",
    "KillSwitch",
    "Outcome",
    "OutcomeStatus",
    "Precedent",
    "RawJSON",
    "RuleMatch",
    "arguments_hash",
    "new_id",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    """A unique id that sorts by creation time, so listings in id order read chronologically."""
    return f"{prefix}_{time.time_ns():x}{random_hex(6)}"


class _Entropy:
    """The operating system's random bytes, read 4 KiB at a time: a decision takes four or five
    ids, and a ``getrandom`` call for each cost more than the rest of making them (system calls
    are dear on virtual machines). Still the OS's cryptographic randomness, only fetched in bulk;
    a forked child starts with a fresh supply, so it never repeats its parent's ids."""

    SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def hex(self, n: int) -> str:
        with self._lock:
            at = self._at
            if at + n > len(self._bytes):
                self._bytes, at = os.urandom(max(self.SIZE, n)), 0
            self._at = at + n
            return self._bytes[at : at + n].hex()

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._bytes, self._at = b"", 0


random_hex = _Entropy().hex


#: Built once: ``json.dumps`` with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_json(value: Any) -> str:
    """One spelling per value, so that equal arguments always hash equal."""
    return _CANONICAL.encode(value)


class RawJSON(str):
    """Text that is JSON already (for example :func:`canonical_json` output), so that a value
    serialised once can be stored in a JSON column and embedded in an audit body as it is."""

    __slots__ = ()


def arguments_hash(arguments: dict[str, Any]) -> str:
    """Binds an approval to the exact arguments a person saw."""
    return hashlib.sha256(canonical_json(arguments).encode()).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class DecisionResult(str, Enum):
    allowed = "allowed"
    blocked = "blocked"
    requires_approval = "requires_approval"


#: Most restrictive first; the policy keeps the strongest verdict any rule gives.
SEVERITY = {DecisionResult.allowed: 0, DecisionResult.requires_approval: 1, DecisionResult.blocked: 2}


class ExecutionStatus(str, Enum):
    """What happened to the tool call after the decision.

    ``unknown`` marks a call that was claimed for execution and never reported back: it may or
    may not have run, and it is never retried silently.
    """

    executed = "executed"
    failed = "failed"
    blocked = "blocked"
    approval_required = "approval_required"
    rejected = "rejected"
    not_run = "not_run"
    unknown = "unknown"


#: Statuses that mean the tool did not run, so the call gives back its rate-limit slot.
NOT_RUN_STATUSES = frozenset({ExecutionStatus.blocked, ExecutionStatus.rejected, ExecutionStatus.not_run})


class OutcomeStatus(str, Enum):
    succeeded = "succeeded"
    failed = "failed"
    reverted = "reverted"
    harmful = "harmful"


class ApprovalStatus(str, Enum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"


#: What an identifier may be: one line of printable text (no NUL or other control characters,
#: which PostgreSQL refuses and a terminal obeys), short enough to index and to show a person.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_PRINTABLE)]
LongName = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=_PRINTABLE)]


class Action(_Model):
    """A tool call the model proposed, with what is at stake. The limits here are the only ones:
    the embedded engine, the server (a 422 naming the field) and both stores apply these."""

    tool: Name
    arguments: dict[str, Any] = Field(default_factory=dict)
    actor: Name = "anonymous"
    domain: Name = "default"
    value: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                description="Money or units at stake (finite, not negative); None when nothing is.")  # fmt: skip
    target: LongName | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    trace_id: Name | None = None


class RuleMatch(_Model):
    """One rule that fired, and why, in words a person understands."""

    rule_id: str
    rule_version: int = 1
    effect: Literal["block", "require_approval"]
    limit: str
    reason: str
    shadow: bool = False


class Precedent(_Model):
    """A similar past case used as evidence for a decision."""

    request_id: str
    similarity: float
    outcome: str | None = None
    severity: float | None = None
    cost: float | None = None
    tool: str | None = None
    decided_at: datetime | None = None


class ArgumentPatch(_Model):
    """One argument a constrained-allow rule changed: the call runs with ``value`` instead."""

    rule_id: str
    argument: str
    kind: Literal["clamp", "override"]
    original: Any = None
    value: Any = None


class Decision(_Model):
    request_id: str
    trace_id: str
    tool: str
    actor: str
    domain: str
    result: DecisionResult
    reason: str
    risk_score: float = Field(ge=0.0, le=1.0)
    matched_rules: list[RuleMatch] = Field(default_factory=list)
    shadow_rules: list[RuleMatch] = Field(
        default_factory=list, description="Rules in shadow status that would have fired; never enforced."
    )
    precedents: list[Precedent] = Field(default_factory=list)
    evidence: float = Field(default=0.0, description="How much past evidence the risk estimate rests on.")
    risk_summary: str | None = Field(
        default=None, description="One sentence on what the precedents show, whether or not they changed the verdict."
    )
    rules_result: DecisionResult | None = Field(
        default=None, description="The verdict of the rules alone; differs from result when memory tightened it."
    )
    policy_version: str
    decided_at: datetime
    approval_id: str | None = None
    approval_expires_at: datetime | None = None
    args_hash: str
    patches: list[ArgumentPatch] = Field(
        default_factory=list,
        description="Arguments changed by constrained-allow rules; the verdict is the patched call's, and only the "
                    "patched call may run (args_hash is its).",
    )  # fmt: skip

    def patched(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` as the decision lets them run: with its patches applied."""
        return {**arguments, **{p.argument: p.value for p in self.patches}} if self.patches else arguments

    @model_validator(mode="before")
    @classmethod
    def _derived_fields(cls, data: Any) -> Any:
        """Accept our own JSON back: ``allowed`` and ``requires_approval`` are derived from
        ``result``, so they are dropped on input, and refused if they contradict it."""
        if isinstance(data, dict) and ("allowed" in data or "requires_approval" in data):
            data = dict(data)
            allowed, pending = data.pop("allowed", None), data.pop("requires_approval", None)
            result = str(getattr(data.get("result"), "value", data.get("result")))
            if (allowed is not None and allowed != (result == "allowed")) or (
                pending is not None and pending != (result == "requires_approval")
            ):
                raise ValueError(f"allowed/requires_approval contradict result {result!r}")
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allowed(self) -> bool:
        return self.result is DecisionResult.allowed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requires_approval(self) -> bool:
        return self.result is DecisionResult.requires_approval


class ApprovalVote(_Model):
    approver: str
    resolution: Literal["approved", "rejected"]
    comment: str | None = None
    at: datetime


class Approval(_Model):
    approval_id: str
    request_id: str
    status: ApprovalStatus
    tool: str
    actor: str
    domain: str
    value: float | None = None
    arguments: dict[str, Any]
    args_hash: str
    policy_version: str
    reason: str
    approvals_required: int = 1
    votes: list[ApprovalVote] = Field(default_factory=list)
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    comment: str | None = None


class Execution(_Model):
    request_id: str
    status: ExecutionStatus
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    reported_at: datetime | None = None
    result_summary: Any = None
    error: str | None = None


class Outcome(_Model):
    request_id: str
    status: OutcomeStatus
    severity: float = Field(default=0.0, ge=0.0, le=1.0)
    cost: float = Field(default=0.0, ge=0.0)
    description: str | None = None
    observed_at: datetime
    reported_by: str | None = None
    event_id: str
    recorded_at: datetime


class KillSwitch(_Model):
    scope: Literal["all", "domain", "tool", "actor"]
    value: str = ""
    reason: str | None = None
    activated_by: str | None = None
    activated_at: datetime

    def covers(self, *, domain: str, tool: str, actor: str) -> bool:
        """Whether a call of ``tool`` by ``actor`` in ``domain`` is under this switch."""
        scope, value = self.scope, self.value
        return scope == "all" or (scope, value) in (("domain", domain), ("tool", tool), ("actor", actor))


class Event(_Model):
    """One audit record; ``hash`` chains it to the record before it."""

    event_id: str
    seq: int
    trace_id: str | None = None
    request_id: str | None = None
    type: str
    schema_version: int
    source_version: str
    created_at: datetime
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass
class Delivery:
    """A webhook delivery a sender claimed from the outbox (:mod:`clearance.store.outbox`), to send now."""

    delivery_id: str
    url: str
    event_type: str
    body: str
    attempts: int


@dataclass
class Attempt:
    """What came of sending a webhook delivery, for the outbox to record."""

    delivery: Delivery
    state: str  # delivered | retry | failed | released
    status: int | None = None
    error: str | None = None
    delay: float = 0.0
