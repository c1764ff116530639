"""The engine for asyncio code: the same operations, run in worker threads.

Database work blocks; running it in a thread keeps the event loop free while a decision commits.
The sync :class:`Engine` stays the one implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from clearance.engine.audit import AuditReport
from clearance.engine.core import Engine, PolicyInfo
from clearance.model import Action, Approval, ApprovalStatus, Decision, Event, Execution, ExecutionStatus, KillSwitch, Outcome, OutcomeStatus, Precedent
from clearance.policy import RuleFile

if TYPE_CHECKING:
    from clearance.memory.report import LearningReport

__all__ = ["AsyncEngine"]


class AsyncEngine:
    def __init__(self, engine: Engine | None = None, **kw: Any) -> None:
        self.sync = engine if engine is not None else Engine(**kw)

    async def evaluate(self, action: Action | Mapping[str, Any]) -> Decision:
        return await asyncio.to_thread(self.sync.evaluate, action)

    async def get_decision(self, request_id: str) -> Decision:
        return await asyncio.to_thread(self.sync.get_decision, request_id)

    async def get_action(self, request_id: str) -> Action:
        return await asyncio.to_thread(self.sync.get_action, request_id)

    async def precedents(self, request_id: str) -> list[Precedent]:
        return await asyncio.to_thread(self.sync.precedents, request_id)

    async def learning_report(self) -> LearningReport:
        return await asyncio.to_thread(self.sync.learning_report)

    async def claim_execution(self, request_id: str, *, claimant: str, arguments: Mapping[str, Any] | None = None) -> Execution:
        return await asyncio.to_thread(self.sync.claim_execution, request_id, claimant=claimant, arguments=arguments)

    async def record_execution(self, request_id: str, status: ExecutionStatus | str, result_summary: Any = None,
                               error: str | None = None) -> Execution:  # fmt: skip
        return await asyncio.to_thread(self.sync.record_execution, request_id, status, result_summary, error)

    async def record_executions(self, reports: Any) -> Any:
        return await asyncio.to_thread(self.sync.record_executions, reports)

    async def get_execution(self, request_id: str) -> Execution | None:
        return await asyncio.to_thread(self.sync.get_execution, request_id)

    async def report_outcome(self, request_id: str, status: OutcomeStatus | str, *, severity: float = 0.0, cost: float = 0.0,
                             description: str | None = None, observed_at: datetime | None = None,
                             reported_by: str | None = None, event_id: str | None = None) -> Outcome:  # fmt: skip
        return await asyncio.to_thread(
            self.sync.report_outcome, request_id, status, severity=severity, cost=cost, description=description,
            observed_at=observed_at, reported_by=reported_by, event_id=event_id,
        )  # fmt: skip

    async def outcomes(self, request_id: str) -> list[Outcome]:
        return await asyncio.to_thread(self.sync.outcomes, request_id)

    async def list_approvals(self, status: ApprovalStatus | str | None = ApprovalStatus.pending, *, limit: int = 100) -> list[Approval]:
        return await asyncio.to_thread(self.sync.list_approvals, status, limit=limit)

    async def get_approval(self, approval_id: str) -> Approval:
        return await asyncio.to_thread(self.sync.get_approval, approval_id)

    async def resolve_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | ApprovalStatus | str, *,
                               approver: str, comment: str | None = None) -> Approval:  # fmt: skip
        return await asyncio.to_thread(self.sync.resolve_approval, approval_id, resolution, approver=approver, comment=comment)

    async def expire_approvals(self) -> list[Approval]:
        return await asyncio.to_thread(self.sync.expire_approvals)

    async def apply_rules(self, rules: RuleFile | str | Path, *, applied_by: str | None = None) -> PolicyInfo:
        return await asyncio.to_thread(self.sync.apply_rules, rules, applied_by=applied_by)

    async def activate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                                   reason: str | None = None, by: str | None = None) -> KillSwitch:  # fmt: skip
        return await asyncio.to_thread(self.sync.activate_kill_switch, domain=domain, tool=tool, actor=actor, reason=reason, by=by)

    async def deactivate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                                     by: str | None = None) -> bool:  # fmt: skip
        return await asyncio.to_thread(self.sync.deactivate_kill_switch, domain=domain, tool=tool, actor=actor, by=by)

    async def kill_switches(self) -> list[KillSwitch]:
        return await asyncio.to_thread(self.sync.kill_switches)

    async def save_run(self, run_id: str, state: dict[str, Any], approval_ids: list[str]) -> None:
        await asyncio.to_thread(self.sync.save_run, run_id, state, approval_ids)

    async def take_run(self, approval_id: str, *, wait_seconds: float = 30.0) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.take_run, approval_id, wait_seconds=wait_seconds)

    async def release_run(self, run_id: str) -> None:
        await asyncio.to_thread(self.sync.release_run, run_id)

    async def audit_events(self, **filters: Any) -> list[Event]:
        return await asyncio.to_thread(self.sync.audit_events, **filters)

    async def verify_audit(self) -> AuditReport:
        return await asyncio.to_thread(self.sync.verify_audit)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
