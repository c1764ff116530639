"""Request and response bodies of the HTTP API: the OpenAPI document is generated from these.

Responses reuse the vocabulary of :mod:`clearance.model` (``Decision``, ``Approval``,
``Execution``, ``Outcome``, ``KillSwitch``, ``Event``, ``Action``) as they are, so the embedded
and the remote engine return the same objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from clearance.model import Action, Decision, Execution, ExecutionStatus, Outcome, OutcomeStatus
from clearance.policy import RuleFile
from clearance.server.errors import ErrorBody

MAX_BATCH = 500


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- decisions --------------------------------------------------------------------------------
class EvaluateBatchRequest(_In):
    actions: list[Action] = Field(min_length=1, max_length=MAX_BATCH)


class EvaluateBatchResponse(BaseModel):
    decisions: list[Decision]


class RefusedProposal(_In):
    tool: str = Field(min_length=1, max_length=100_000, description="The name the model used (kept bounded).")
    reason: str = Field(min_length=1, max_length=100_000)
    actor: str | None = Field(default=None, min_length=1, max_length=256, description="An agent key's own identity when absent.")
    domain: str = Field(default="default", min_length=1, max_length=256)
    trace_id: str | None = Field(default=None, max_length=128)


class Audited(BaseModel):
    audited: bool = True


class ClaimRequest(_In):
    claimant: str = Field(min_length=1, max_length=256)
    arguments: dict[str, Any] | None = Field(default=None, description="The arguments about to run; must be those decided.")


class RecordExecutionRequest(_In):
    status: ExecutionStatus
    result_summary: Any = None
    error: str | None = None


class ExecutionReport(RecordExecutionRequest):
    request_id: str = Field(min_length=1, max_length=64)


class RecordExecutionsRequest(_In):
    reports: list[ExecutionReport] = Field(min_length=1, max_length=MAX_BATCH)


class ExecutionResult(BaseModel):
    ok: bool
    execution: Execution | None = None
    error: ErrorBody | None = None


class RecordExecutionsResponse(BaseModel):
    results: list[ExecutionResult]


class ReportOutcomeRequest(_In):
    status: OutcomeStatus
    severity: float = Field(default=0.0, ge=0.0, le=1.0)
    cost: float = Field(default=0.0, ge=0.0, le=1e15)
    description: str | None = Field(default=None, max_length=10_000)
    observed_at: AwareDatetime | None = None
    reported_by: str | None = Field(default=None, max_length=256)
    event_id: str | None = Field(default=None, min_length=1, max_length=128, description="Idempotency key of the outcome.")


class OutcomeReport(ReportOutcomeRequest):
    request_id: str = Field(min_length=1, max_length=64)


class ReportOutcomesRequest(_In):
    outcomes: list[OutcomeReport] = Field(min_length=1, max_length=MAX_BATCH)


class OutcomeResult(BaseModel):
    ok: bool
    outcome: Outcome | None = None
    error: ErrorBody | None = None


class ReportOutcomesResponse(BaseModel):
    results: list[OutcomeResult]


class PrecedentsResponse(BaseModel):
    request_id: str
    risk_score: float
    evidence: float
    risk_summary: str | None = None
    precedents: list[dict[str, Any]]


# -- approvals ------------------------------------------------------------------------------
class ResolveRequest(_In):
    resolution: Literal["approved", "rejected"]
    approver: str | None = Field(default=None, min_length=1, max_length=256,
                                 description="Admins may name the approver; other keys answer as their own identity.")
    comment: str | None = Field(default=None, max_length=10_000)


# -- rules ----------------------------------------------------------------------------------
class RulesDocument(BaseModel):
    """The rules in force (``policy_version`` ``"0"``: none applied yet)."""

    policy_version: str
    version: int = 1
    rules: list[dict[str, Any]]
    rule_versions: dict[str, int] = Field(default_factory=dict)


class RuleView(BaseModel):
    rule: dict[str, Any]
    rule_version: int
    policy_version: str


class ApplyRulesRequest(_In):
    """A whole rules document, as JSON (``document``) or as the YAML text of a rules file (``yaml``)."""

    document: RuleFile | None = None
    yaml: str | None = Field(default=None, max_length=1_000_000)


class ValidateResponse(BaseModel):
    valid: bool
    rules: list[str] = Field(default_factory=list)
    error: str | None = None


class PolicyVersion(BaseModel):
    version: int
    digest: str
    applied_at: datetime
    applied_by: str | None = None


class DryRunRequest(_In):
    actions: list[Action] = Field(min_length=1, max_length=MAX_BATCH)
    document: RuleFile | None = Field(default=None, description="Judge with these rules instead of those in force.")


class DryRunVerdict(BaseModel):
    result: str
    reason: str
    matched_rules: list[dict[str, Any]]
    shadow_rules: list[dict[str, Any]]


class DryRunResponse(BaseModel):
    policy_version: str
    verdicts: list[DryRunVerdict]


# -- kill switch ----------------------------------------------------------------------------
class KillSwitchScope(_In):
    domain: str | None = Field(default=None, min_length=1, max_length=256)
    tool: str | None = Field(default=None, min_length=1, max_length=256)
    actor: str | None = Field(default=None, min_length=1, max_length=256)


class KillSwitchRequest(KillSwitchScope):
    reason: str | None = Field(default=None, max_length=10_000)


class DeactivatedResponse(BaseModel):
    deactivated: bool


# -- runs -----------------------------------------------------------------------------------
class SaveRunRequest(_In):
    state: dict[str, Any]
    approval_ids: list[str] = Field(default_factory=list, max_length=MAX_BATCH)


class TakeRunRequest(_In):
    approval_id: str = Field(min_length=1, max_length=64)
    wait_seconds: float = Field(default=30.0, ge=0.0, le=120.0)


class RunStateResponse(BaseModel):
    state: dict[str, Any]


# -- keys -----------------------------------------------------------------------------------
class CreateKeyRequest(_In):
    name: str = Field(min_length=1, max_length=256)
    role: Literal["agent", "approver", "admin"]
    identity: str | None = Field(default=None, min_length=1, max_length=256,
                                 description="The actor or person the key speaks for; its name when absent.")


class KeyView(BaseModel):
    key_id: str
    name: str
    role: str
    identity: str
    created_at: datetime
    created_by: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class CreatedKey(KeyView):
    token: str = Field(description="The secret; shown once, never stored.")


# -- health ---------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    policy_version: str | None = None
    detail: str | None = None

