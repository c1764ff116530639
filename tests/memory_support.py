"""Helpers the memory tests share."""

from __future__ import annotations

from typing import Any


def record_if_ran(engine: Any, decision: Any) -> None:
    """Record that the call ran where it could have: allowed, or its approval granted. A call
    that asked and was never answered, or was blocked, did not run (executions are a state
    machine); its outcome, reported all the same, still teaches memory."""
    approved = decision.approval_id is not None and engine.get_approval(decision.approval_id).status.value == "approved"
    if decision.allowed or approved:
        engine.record_execution(decision.request_id, "executed")
