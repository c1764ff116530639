"""A call made again while its approval is pending or granted runs under that approval.

An MCP client that gave up waiting (or a gateway that was restarted) sends the same call again
once someone has answered; deciding it anew would ask a person a second time. The earlier
decision is found by the call's identity (tool, actor, domain, arguments hash, and the MCP
source it went to), as long as its approval is pending or approved, within the approval's
deadline, and nothing has run under it yet. Running it still takes a claim, so a retry and the
original can never both run it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from clearance.model import Action, Decision, ExecutionStatus
from clearance.store import SqlTx

if TYPE_CHECKING:
    from clearance.engine.core import Engine

__all__ = ["decide_joining", "open_approval"]


def open_approval(tx: SqlTx, action: Action, args_hash: str, now: datetime) -> Decision | None:
    """The newest decision of a call identical to ``action`` (whose arguments hash, as the engine
    keys it, is ``args_hash``) that waits for, or has, its approval and has not run."""
    for row in tx.open_approvals(args_hash, now):
        data = row["data"]
        if (data["tool"], data["actor"], data["domain"]) != (action.tool, action.actor, action.domain):
            continue
        decided = tx.get_decision(row["request_id"])
        if decided is None or (decided["context"] or {}).get("mcp") != action.context.get("mcp"):
            continue  # another face's call (an agent run's own resume will claim it)
        execution = tx.get_execution(row["request_id"])
        if execution is None or execution["status"] == ExecutionStatus.approval_required.value:
            return Decision.model_validate(decided["decision"])
    return None


def decide_joining(engine: Engine, action: Action) -> Callable[[SqlTx], Decision]:
    """An operation for the engine's group commit (:class:`~clearance.engine.batch.BatchWriter`):
    in the batch's own transaction, the open approval of an identical call (asked for before, in
    this process or an earlier one: the call waits for or runs under it rather than ask a person
    again), else a new decision. One transaction, so a face never holds the store's."""

    def decide(tx: SqlTx) -> Decision:
        return open_approval(tx, action, engine.args_hash(action.arguments), engine.clock()) or engine.evaluate(action)

    return decide
