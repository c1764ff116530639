"""clearance: decide each tool call of an AI agent before it runs, and learn from what happened."""

from clearance._version import __version__
from clearance.engine import AsyncEngine, AuditReport, Checkpoint, Engine, PolicyInfo
from clearance.errors import ClearanceError, RuleError, UnknownRequest
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
)
from clearance.policy import Rule, RuleFile, load_rules, parse_rules

__all__ = [
    "Action",
    "AsyncGuardedOpenAI",
    "AsyncRemoteEngine",
    "GuardedOpenAI",
    "RemoteEngine",
    "Approval",
    "ApprovalStatus",
    "AsyncEngine",
    "AuditReport",
    "Checkpoint",
    "ClearanceError",
    "Decision",
    "DecisionResult",
    "Engine",
    "Event",
    "Execution",
    "ExecutionStatus",
    "KillSwitch",
    "Outcome",
    "OutcomeStatus",
    "PolicyInfo",
    "Rule",
    "RuleError",
    "RuleFile",
    "UnknownRequest",
    "__version__",
    "load_rules",
    "parse_rules",
]


def __getattr__(name: str) -> object:
    # The OpenAI adapter loads the openai SDK; only pay for it when it is used.
    if name in ("GuardedOpenAI", "AsyncGuardedOpenAI"):
        from clearance.adapters import openai as adapter

        return getattr(adapter, name)
    if name in ("RemoteEngine", "AsyncRemoteEngine"):
        # httpx is only loaded by code that talks to a server.
        from clearance import remote

        return getattr(remote, name)
    raise AttributeError(f"module 'clearance' has no attribute {name!r}")
