"""Decisions, approvals, executions, outcomes, kill switch and audit over one store."""

from clearance.engine.aio import AsyncEngine
from clearance.engine.anchor import Checkpoint
from clearance.engine.audit import AuditReport
from clearance.engine.core import Engine, PolicyInfo

__all__ = ["AsyncEngine", "AuditReport", "Checkpoint", "Engine", "PolicyInfo"]
