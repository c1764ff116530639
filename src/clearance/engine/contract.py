"""The engine's operations, declared once.

:class:`EngineAPI` is what every engine offers, blocking; :class:`AsyncEngineAPI` is its asyncio
twin. :data:`OPERATIONS` says how each operation travels over HTTP (method, path, who may call
it) and how its answer is read. :class:`~clearance.Engine` implements the protocol;
:class:`~clearance.AsyncEngine`, :class:`~clearance.RemoteEngine` and
:class:`~clearance.AsyncRemoteEngine` are derived from it (:func:`derive`), and the server's
routes answer the same paths. Code above the engine (the adapter, the step, the CLI, the server)
is typed against the protocol, so it never knows which engine it holds. A test fails when any
facade lacks an operation or its signature drifts.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from clearance.model import (
    Action,
    Approval,
    ApprovalStatus,
    Decision,
    DecisionResult,
    Event,
    Execution,
    ExecutionStatus,
    KillSwitch,
    Outcome,
    OutcomeStatus,
    Precedent,
)

if TYPE_CHECKING:
    from clearance.engine.anchor import Checkpoint
    from clearance.engine.audit import AuditReport
    from clearance.engine.backtest import BacktestReport
    from clearance.engine.core import PolicyInfo
    from clearance.engine.evidence import Promotion, RuleEvidence
    from clearance.errors import ClearanceError
    from clearance.memory.report import LearningReport
    from clearance.policy import RuleFile, RuleSet

__all__ = ["OPERATIONS", "AsyncEngineAPI", "EngineAPI", "ExecutionReport", "Operation", "derive", "returns"]

#: ``(request_id, status, result_summary, error)``: one execution to record.
ExecutionReport = tuple[str, "ExecutionStatus | str", Any, "str | None"]


class EngineAPI(Protocol):
    """Every engine's operations, blocking."""

    def evaluate(self, action: Action | Mapping[str, Any]) -> Decision:
        """Decide one call; the decision and its audit event are durable when this returns."""
        ...

    def evaluate_batch(self, actions: Sequence[Action | Mapping[str, Any]]) -> list[Decision]:
        """Decide several calls, in order."""
        ...

    def get_decision(self, request_id: str) -> Decision: ...

    def get_action(self, request_id: str) -> Action:
        """The action as it was decided, arguments included."""
        ...

    def list_decisions(self, *, result: DecisionResult | str | None = None, tool: str | None = None,
                       actor: str | None = None, domain: str | None = None, rule: str | None = None,
                       since: datetime | None = None, until: datetime | None = None, before: str | None = None,
                       limit: int = 100) -> list[Decision]:  # fmt: skip
        """Decisions newest first, filtered (``rule``: among matched or shadow rules; ``since <=
        decided_at < until``); ``before`` is the last request id of the previous page."""
        ...

    def precedents(self, request_id: str) -> list[Precedent]:
        """The past cases a decision rested on, strongest first, as it recorded them."""
        ...

    def learning_report(self) -> LearningReport:
        """What memory changed and how well its risk matched real outcomes."""
        ...

    def refuse_proposal(self, tool: str, reason: str, *, actor: str = "anonymous", domain: str = "default",
                        trace_id: str | None = None) -> None:  # fmt: skip
        """Put a call the model proposed and the guard refused before any decision (a tool not
        registered, arguments that are not JSON or break the schema) in the audit trail."""
        ...

    def claim_execution(self, request_id: str, *, claimant: str, arguments: Mapping[str, Any] | None = None) -> Execution:
        """Take the one right to run an allowed or approved call; exactly one caller wins."""
        ...

    def record_execution(self, request_id: str, status: ExecutionStatus | str, result_summary: Any = None,
                         error: str | None = None) -> Execution:  # fmt: skip
        """Record what happened to the call; a call that did not run gives back its slots."""
        ...

    def record_executions(self, reports: Sequence[ExecutionReport]) -> list[Execution | ClearanceError]:
        """Record several executions in one durable transaction; a refused report comes back as its error."""
        ...

    def get_execution(self, request_id: str) -> Execution | None: ...

    def report_outcome(self, request_id: str, status: OutcomeStatus | str, *, severity: float = 0.0, cost: float = 0.0,
                       description: str | None = None, observed_at: datetime | None = None,
                       reported_by: str | None = None, event_id: str | None = None) -> Outcome:  # fmt: skip
        """Link a real-world outcome to a decision. Idempotent on ``event_id``."""
        ...

    def outcomes(self, request_id: str) -> list[Outcome]: ...

    def list_approvals(self, status: ApprovalStatus | str | None = ApprovalStatus.pending, *, limit: int = 100) -> list[Approval]:
        """Approvals by status (``None`` for all), oldest first."""
        ...

    def get_approval(self, approval_id: str) -> Approval: ...

    def wait_approval(self, approval_id: str, *, timeout_seconds: float = 30.0) -> Approval:
        """The approval once it is no longer pending, or as it stands when the timeout passes."""
        ...

    def resolve_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | ApprovalStatus | str, *,
                         approver: str, comment: str | None = None) -> Approval:  # fmt: skip
        """Record one person's answer. Of concurrent resolutions exactly one takes effect."""
        ...

    def expire_approvals(self) -> list[Approval]:
        """Close every pending approval past its deadline, giving back reserved slots."""
        ...

    def apply_rules(self, rules: RuleFile | str | Path, *, applied_by: str | None = None) -> PolicyInfo:
        """Make a rules file the policy; a new version only when something changed."""
        ...

    def current_rules(self) -> RuleSet: ...

    def policy_versions(self) -> list[dict[str, Any]]: ...

    def backtest(self, rules: RuleFile | str | Path, *, since: datetime | None = None) -> BacktestReport:
        """What a candidate rules file would have done to the decisions recorded since ``since``
        (all of them by default): verdict changes, their recorded outcomes, approval load, per
        rule. Judged by the engine's own evaluation, counters replayed in time order; writes nothing."""
        ...

    def rule_evidence(self, rule_id: str, *, since: datetime | None = None) -> RuleEvidence:
        """A rule's recorded would-have-fired calls (while in shadow) joined with their outcomes:
        precision against bad outcomes, and friction (good calls it would have stopped)."""
        ...

    def promote_rule(self, rule_id: str, *, force: bool = False, min_outcomes: int = 1,
                     applied_by: str | None = None) -> Promotion:  # fmt: skip
        """Turn a shadow rule on, with its evidence; refused without evidence unless ``force``."""
        ...

    def activate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                             reason: str | None = None, by: str | None = None) -> KillSwitch:  # fmt: skip
        """Block every matching call until deactivated."""
        ...

    def deactivate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                               by: str | None = None) -> bool:  # fmt: skip
        ...

    def kill_switches(self) -> list[KillSwitch]: ...

    def save_run(self, run_id: str, state: dict[str, Any], approval_ids: list[str], *, owner: str | None = None) -> None:
        """Keep a run that waits for approvals; its digest goes into the audit chain. With an
        ``owner`` (the server passes the agent key's identity), the run is that owner's: nobody
        else may save it again or release it, and its approvals must be of the owner's calls."""
        ...

    def take_run(self, approval_id: str, *, wait_seconds: float = 30.0) -> dict[str, Any]:
        """Hand out, once, the saved run that waits for ``approval_id``."""
        ...

    def release_run(self, run_id: str, *, owner: str | None = None) -> None: ...

    def audit_events(self, *, request_id: str | None = None, trace_id: str | None = None, type: str | None = None,
                     after_seq: int = 0, limit: int = 100, since: datetime | None = None,
                     until: datetime | None = None) -> list[Event]:
        """Audit events oldest first after ``after_seq`` (``since <= created_at < until``)."""
        ...

    def verify_audit(self, *, request_id: str | None = None) -> AuditReport:
        """Check the audit chain, its checkpoints and the state tables; with ``request_id``, only
        that request's events: that each still holds its place in the chain (cheap, for a view of
        one decision; the whole check is the proof)."""
        ...

    def checkpoint_audit(self) -> Checkpoint:
        """Sign the audit chain's head now with the engine's anchor key, keep and return the checkpoint."""
        ...


class AsyncEngineAPI(Protocol):
    """:class:`EngineAPI` for asyncio: the same operations, awaited (checked by a test)."""

    async def evaluate(self, action: Action | Mapping[str, Any]) -> Decision: ...
    async def evaluate_batch(self, actions: Sequence[Action | Mapping[str, Any]]) -> list[Decision]: ...
    async def get_decision(self, request_id: str) -> Decision: ...
    async def get_action(self, request_id: str) -> Action: ...
    async def list_decisions(self, *, result: DecisionResult | str | None = None, tool: str | None = None,
                             actor: str | None = None, domain: str | None = None, rule: str | None = None,
                             since: datetime | None = None, until: datetime | None = None, before: str | None = None,
                             limit: int = 100) -> list[Decision]: ...  # fmt: skip
    async def precedents(self, request_id: str) -> list[Precedent]: ...
    async def learning_report(self) -> LearningReport: ...
    async def refuse_proposal(self, tool: str, reason: str, *, actor: str = "anonymous", domain: str = "default",
                              trace_id: str | None = None) -> None: ...  # fmt: skip
    async def claim_execution(self, request_id: str, *, claimant: str, arguments: Mapping[str, Any] | None = None) -> Execution: ...
    async def record_execution(self, request_id: str, status: ExecutionStatus | str, result_summary: Any = None,
                               error: str | None = None) -> Execution: ...  # fmt: skip
    async def record_executions(self, reports: Sequence[ExecutionReport]) -> list[Execution | ClearanceError]: ...
    async def get_execution(self, request_id: str) -> Execution | None: ...
    async def report_outcome(self, request_id: str, status: OutcomeStatus | str, *, severity: float = 0.0, cost: float = 0.0,
                             description: str | None = None, observed_at: datetime | None = None,
                             reported_by: str | None = None, event_id: str | None = None) -> Outcome: ...  # fmt: skip
    async def outcomes(self, request_id: str) -> list[Outcome]: ...
    async def list_approvals(self, status: ApprovalStatus | str | None = ApprovalStatus.pending, *,
                             limit: int = 100) -> list[Approval]: ...  # fmt: skip
    async def get_approval(self, approval_id: str) -> Approval: ...
    async def wait_approval(self, approval_id: str, *, timeout_seconds: float = 30.0) -> Approval: ...
    async def resolve_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | ApprovalStatus | str, *,
                               approver: str, comment: str | None = None) -> Approval: ...  # fmt: skip
    async def expire_approvals(self) -> list[Approval]: ...
    async def apply_rules(self, rules: RuleFile | str | Path, *, applied_by: str | None = None) -> PolicyInfo: ...
    async def current_rules(self) -> RuleSet: ...
    async def policy_versions(self) -> list[dict[str, Any]]: ...
    async def backtest(self, rules: RuleFile | str | Path, *, since: datetime | None = None) -> BacktestReport: ...
    async def rule_evidence(self, rule_id: str, *, since: datetime | None = None) -> RuleEvidence: ...
    async def promote_rule(self, rule_id: str, *, force: bool = False, min_outcomes: int = 1,
                           applied_by: str | None = None) -> Promotion: ...  # fmt: skip
    async def activate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                                   reason: str | None = None, by: str | None = None) -> KillSwitch: ...  # fmt: skip
    async def deactivate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                                     by: str | None = None) -> bool: ...  # fmt: skip
    async def kill_switches(self) -> list[KillSwitch]: ...
    async def save_run(self, run_id: str, state: dict[str, Any], approval_ids: list[str], *, owner: str | None = None) -> None: ...
    async def take_run(self, approval_id: str, *, wait_seconds: float = 30.0) -> dict[str, Any]: ...
    async def release_run(self, run_id: str, *, owner: str | None = None) -> None: ...
    async def audit_events(self, *, request_id: str | None = None, trace_id: str | None = None, type: str | None = None,
                           after_seq: int = 0, limit: int = 100, since: datetime | None = None,
                           until: datetime | None = None) -> list[Event]: ...  # fmt: skip
    async def verify_audit(self, *, request_id: str | None = None) -> AuditReport: ...
    async def checkpoint_audit(self) -> Checkpoint: ...


Role = Literal["agent", "approver"]


@dataclass(frozen=True)
class Operation:
    """How one operation travels over HTTP.

    Arguments named in ``path`` go in the path; for GET the others are query parameters, for
    POST/PUT the JSON body. ``server_sets`` are arguments the server takes from the API key's
    identity (never sent). ``answer`` is the key of the answer that holds the result, when the
    answer wraps it. ``wait`` names the argument that lengthens the HTTP timeout (a long poll).
    """

    name: str
    method: Literal["GET", "POST", "PUT"]
    path: str
    roles: tuple[Role, ...] = ()
    server_sets: tuple[str, ...] = ()
    answer: str | None = None
    wait: str | None = None
    #: The argument sent as the whole JSON body (rather than the arguments as its fields).
    body: str | None = None

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{"))


_AGENT: tuple[Role, ...] = ("agent",)
_READERS: tuple[Role, ...] = ("agent", "approver")
_APPROVER: tuple[Role, ...] = ("approver",)
_ADMIN: tuple[Role, ...] = ()

OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation("evaluate", "POST", "/v1/decisions", _AGENT, body="action"),
    Operation("evaluate_batch", "POST", "/v1/decisions/batch", _AGENT, answer="decisions"),
    Operation("list_decisions", "GET", "/v1/decisions", _APPROVER),
    Operation("get_decision", "GET", "/v1/decisions/{request_id}", _READERS),
    Operation("get_action", "GET", "/v1/decisions/{request_id}/action", _READERS),
    Operation("precedents", "GET", "/v1/decisions/{request_id}/precedents", _READERS, answer="precedents"),
    Operation("learning_report", "GET", "/v1/learning/report", _APPROVER),
    Operation("refuse_proposal", "POST", "/v1/proposals/refused", _AGENT),
    Operation("claim_execution", "POST", "/v1/decisions/{request_id}/claim", _AGENT),
    Operation("record_execution", "POST", "/v1/decisions/{request_id}/execution", _AGENT),
    Operation("record_executions", "POST", "/v1/executions/batch", _AGENT, answer="results"),
    Operation("get_execution", "GET", "/v1/decisions/{request_id}/execution", _READERS),
    Operation("report_outcome", "POST", "/v1/decisions/{request_id}/outcomes", _AGENT),
    Operation("outcomes", "GET", "/v1/decisions/{request_id}/outcomes", _READERS),
    Operation("list_approvals", "GET", "/v1/approvals", _APPROVER),
    Operation("get_approval", "GET", "/v1/approvals/{approval_id}", _READERS),
    Operation("wait_approval", "GET", "/v1/approvals/{approval_id}/wait", _READERS, wait="timeout_seconds"),
    Operation("resolve_approval", "POST", "/v1/approvals/{approval_id}/resolve", _APPROVER),
    Operation("expire_approvals", "POST", "/v1/approvals/expire", _ADMIN),
    Operation("apply_rules", "PUT", "/v1/rules", _ADMIN, server_sets=("applied_by",)),
    Operation("current_rules", "GET", "/v1/rules", _APPROVER),
    Operation("policy_versions", "GET", "/v1/rules/versions", _APPROVER),
    Operation("backtest", "POST", "/v1/rules/backtest", _APPROVER),
    Operation("rule_evidence", "GET", "/v1/rules/{rule_id}/evidence", _APPROVER),
    Operation("promote_rule", "POST", "/v1/rules/{rule_id}/promote", _ADMIN, server_sets=("applied_by",)),
    Operation("activate_kill_switch", "POST", "/v1/kill-switches", _ADMIN, server_sets=("by",)),
    Operation("deactivate_kill_switch", "POST", "/v1/kill-switches/deactivate", _ADMIN, server_sets=("by",),
              answer="deactivated"),
    Operation("kill_switches", "GET", "/v1/kill-switches", _APPROVER),
    Operation("save_run", "PUT", "/v1/runs/{run_id}", _AGENT, server_sets=("owner",)),
    Operation("take_run", "POST", "/v1/runs/take", _AGENT, answer="state", wait="wait_seconds"),
    Operation("release_run", "POST", "/v1/runs/{run_id}/release", _AGENT, server_sets=("owner",)),
    Operation("audit_events", "GET", "/v1/audit/events", _APPROVER),
    Operation("verify_audit", "GET", "/v1/audit/verify", _APPROVER),
    Operation("checkpoint_audit", "POST", "/v1/audit/checkpoints", _ADMIN),
)}  # fmt: skip


def returns(name: str) -> Any:
    """What an operation returns, as a type (the protocol's annotations are strings; the names
    they use from higher modules are imported here, when asked)."""
    from clearance.engine.anchor import Checkpoint
    from clearance.engine.audit import AuditReport
    from clearance.engine.backtest import BacktestReport
    from clearance.engine.core import PolicyInfo
    from clearance.engine.evidence import Promotion, RuleEvidence
    from clearance.errors import ClearanceError
    from clearance.memory.report import LearningReport
    from clearance.policy import RuleFile, RuleSet

    names = {**globals(), "AuditReport": AuditReport, "Checkpoint": Checkpoint, "PolicyInfo": PolicyInfo, "ClearanceError": ClearanceError,
             "BacktestReport": BacktestReport, "Promotion": Promotion, "RuleEvidence": RuleEvidence,
             "LearningReport": LearningReport, "RuleFile": RuleFile, "RuleSet": RuleSet}  # fmt: skip
    return typing.get_type_hints(getattr(EngineAPI, name), globalns=names)["return"]


def derive(cls: type, make: Callable[[str, inspect.Signature], Callable[..., Any]], *, is_async: bool) -> type:
    """Give ``cls`` every operation of the contract: ``make(name, signature)`` returns the
    implementation, which gets the protocol's name, signature and docstring."""
    protocol = AsyncEngineAPI if is_async else EngineAPI
    for name in OPERATIONS:
        declared = getattr(protocol, name)
        signature = inspect.signature(declared)
        fn = make(name, signature)
        fn.__name__, fn.__qualname__ = name, f"{cls.__name__}.{name}"
        fn.__doc__ = getattr(EngineAPI, name).__doc__
        fn.__signature__ = signature  # type: ignore[attr-defined]
        setattr(cls, name, fn)
    return cls
