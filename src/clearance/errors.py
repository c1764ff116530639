"""Errors that callers can act on.

Each error names what was wrong in words meant for the person reading it; the CLI prints the
message as is and the server (later) maps the class to an HTTP status.
"""

from __future__ import annotations

__all__ = [
    "AlreadyClaimed",
    "AnchorError",
    "ApprovalExpired",
    "ApprovalNotPending",
    "ArgumentsMismatch",
    "ClearanceError",
    "ConflictError",
    "DuplicateVote",
    "IllegalTransition",
    "NotApproved",
    "PolicyBlocks",
    "NotFound",
    "RuleError",
    "RunBusy",
    "RunStateTampered",
    "StructuredOutputError",
    "UnknownRequest",
]


class ClearanceError(Exception):
    """Base class: anything clearance refuses on purpose."""


class RuleError(ClearanceError, ValueError):
    """A rules file or rule that cannot be loaded; nothing was applied."""


class NotFound(ClearanceError, LookupError):
    pass


class UnknownRequest(NotFound):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"unknown request id {request_id!r}: no decision was recorded under it")
        self.request_id = request_id


class ConflictError(ClearanceError):
    """The request contradicts what is already recorded."""


class ApprovalNotPending(ConflictError):
    pass


class ApprovalExpired(ApprovalNotPending):
    pass


class DuplicateVote(ConflictError):
    pass


class AlreadyClaimed(ConflictError):
    pass


class NotApproved(ConflictError):
    pass


class PolicyBlocks(NotApproved):
    """An approved call claimed under newer rules that block it: it must not run."""


class NotYours(ClearanceError):
    """Someone else's: a suspended run saved by another identity, or an approval of another actor's call."""


class ArgumentsMismatch(ConflictError):
    pass


class IllegalTransition(ConflictError):
    """An execution report that the call's decision, approval or current status rules out."""


class RunStateTampered(ConflictError):
    """A saved run no longer matches the digest its suspension wrote into the audit chain."""


class RunBusy(ConflictError):
    """Another caller is resuming the same run right now; try again when it has finished."""


class StructuredOutputError(ClearanceError, ValueError):
    """The model's answer does not fit the response format asked for.

    ``result`` is the whole run result (text, events, ...), so nothing of the run is lost;
    ``errors`` lists what did not fit.
    """

    def __init__(self, message: str, *, result: dict | None = None, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.errors = errors or []


class AnchorError(ClearanceError, ValueError):
    """A signing key or a signed checkpoint of the audit chain that cannot be used: a missing or
    unreadable key file, a checkpoint that is not one, a signature or key that does not match."""
