"""The life of one tool call after its decision, as an explicit state machine.

A report is a claim about the world ("it ran", "it did not"), and the exactly-once promise rests
on it: a claimed call must not go back to waiting, and a blocked call cannot have "executed".
So every report is checked against the decision, its approval and the current status, and an
illegal move is refused (409) instead of being written.

Moves (``claim`` is ``claim_execution``; the rest are ``record_execution`` statuses):

- none / approval_required -> approval_required   while the call's approval is pending
- none / approval_required -> claim (unknown)     allowed, or approved (checked by the claim)
- none / approval_required -> executed, failed    allowed, approved, or decided in shadow mode
- none / approval_required -> rejected            the approval was rejected or has expired
- none / approval_required -> blocked             the decision was blocked
- none / approval_required -> not_run             always (the caller chose not to run it)
- unknown (claimed)        -> executed, failed, not_run
- final statuses           -> the same status again (an idempotent retry), nothing else

Shadow mode observes without enforcing: the caller ran the call whatever the verdict, and says
so when it asks (``Action.context[SHADOW_KEY] == "shadow"``); the decision in the chain keeps
that, so such a report is a record of what happened, never a way to claim a blocked call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clearance.errors import IllegalTransition
from clearance.model import DecisionResult, ExecutionStatus

__all__ = ["FINAL", "SHADOW_KEY", "check_report", "is_shadow"]

#: Statuses that end the call's life: a later report may only repeat them.
FINAL = frozenset({ExecutionStatus.executed, ExecutionStatus.failed, ExecutionStatus.not_run,
                   ExecutionStatus.rejected, ExecutionStatus.blocked})  # fmt: skip
#: The key in ``Action.context`` by which a caller in shadow mode says it runs calls regardless.
SHADOW_KEY = "clearance_mode"
_RAN = frozenset({ExecutionStatus.executed, ExecutionStatus.failed})


def is_shadow(context: dict[str, Any] | None) -> bool:
    return bool(context) and context.get(SHADOW_KEY) == "shadow"  # type: ignore[union-attr]


def check_report(request_id: str, *, result: DecisionResult, current: ExecutionStatus | None,
                 wanted: ExecutionStatus, approval: dict[str, Any] | None, shadow: bool,
                 now: datetime) -> bool:  # fmt: skip
    """Refuse an illegal report; True when it only repeats a final status (nothing to write)."""
    if current in FINAL:
        if current is wanted:
            return True
        raise IllegalTransition(f"the execution of {request_id} is already recorded as {current.value}")
    if wanted is ExecutionStatus.unknown:
        raise IllegalTransition(f"{request_id}: 'unknown' is set by claim_execution, not reported")
    if current is ExecutionStatus.unknown:
        if wanted in _RAN or wanted is ExecutionStatus.not_run:
            return False
        raise IllegalTransition(f"{request_id} was claimed for execution; it can only be reported as executed, "
                                f"failed or not_run now, not {wanted.value}")  # fmt: skip
    # Not claimed yet: what the decision and its approval allow.
    status = _approval_status(approval, now)
    if wanted is ExecutionStatus.not_run:
        return False
    if wanted is ExecutionStatus.approval_required:
        if result is DecisionResult.requires_approval and status == "pending":
            return False
        raise IllegalTransition(f"{request_id} is not waiting for an approval (decision {result.value}"
                                f"{', approval ' + status if status else ''})")  # fmt: skip
    if wanted is ExecutionStatus.blocked:
        if result is DecisionResult.blocked:
            return False
        raise IllegalTransition(f"{request_id} was {result.value}, not blocked")
    if wanted is ExecutionStatus.rejected:
        if result is DecisionResult.requires_approval and status in ("rejected", "expired"):
            return False
        raise IllegalTransition(f"{request_id} has no rejected or expired approval (decision {result.value}"
                                f"{', approval ' + status if status else ''})")  # fmt: skip
    # executed / failed: the call ran.
    if result is DecisionResult.allowed or status == "approved" or shadow:
        return False
    why = "it was blocked" if result is DecisionResult.blocked else f"its approval is {status}"
    raise IllegalTransition(f"{request_id} cannot have {wanted.value}: {why}; run only allowed or approved calls")


def _approval_status(approval: dict[str, Any] | None, now: datetime) -> str | None:
    if approval is None:
        return None
    if approval["status"] == "pending" and approval["expires_at"] <= now:
        return "expired"
    return str(approval["status"])
