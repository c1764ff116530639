"""What the governed loop asks its driver to do.

The loop (``loop.py``) is a generator that yields these requests and receives their results, so
it contains every decision about *what* happens and no I/O. The sync and async drivers only
know *how*: call OpenAI, the engine and the tools, blocking or awaiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clearance.model import Action


@dataclass(frozen=True)
class CallModel:
    """Send one request to the model; the result is the response as a plain dict.

    With ``stream`` the driver streams the turn, hands the user its events as they arrive, and
    returns the completed response, or a failed one with no output if the stream broke.
    """

    request: dict[str, Any]
    stream: bool = False


@dataclass(frozen=True)
class Decide:
    """Ask the engine about one action; the result is a Decision, or the exception it raised."""

    action: Action


@dataclass(frozen=True)
class ToolRun:
    call_id: str
    tool: str
    arguments: dict[str, Any]
    #: The decision that let it run (None only when failing open without one); traces carry it.
    request_id: str | None = None


@dataclass(frozen=True)
class RunTools:
    """Run allowed tools (concurrently where the driver can); results are ``ToolResult``s in order."""

    runs: list[ToolRun]


@dataclass(frozen=True)
class ToolResult:
    output: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Claim:
    """Take the one right to run an approved call; the result is None, or the exception raised."""

    request_id: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class GetApproval:
    approval_id: str


@dataclass(frozen=True)
class Record:
    """Record what happened to these calls, durably, in one transaction; the result is None.

    Not best effort: the loop yields it before the model hears any of these results and before
    the run is saved or returns, so when ``run()`` returns every execution is in the store. Each
    report is ``(request_id, status, result_summary, error)``. The driver raises when it cannot.
    """

    reports: list[tuple[str, str, Any, str | None]]


@dataclass(frozen=True)
class Refuse:
    """Audit a proposed call refused before any decision (no such tool, unusable arguments)."""

    tool: str
    reason: str
    trace_id: str | None = None


@dataclass(frozen=True)
class Emit:
    """Hand an execution event to the user's ``on_decision`` hook; its failures are swallowed."""

    event: dict[str, Any]


@dataclass(frozen=True)
class SaveRun:
    """Persist a suspended run in the store, keyed by the approvals it waits for."""

    run_id: str
    state: dict[str, Any]
    approval_ids: list[str] = field(default_factory=list)
