"""One governed function tool of an Agents SDK agent.

The SDK asks two questions of a function tool, and clearance answers both from one decision:

- ``needs_approval(ctx, params, call_id)``: the engine decides the call here, before anything
  runs. A pending clearance approval answers ``True``, so the SDK interrupts the run with its own
  ``ToolApprovalItem`` (``result.interruptions`` / ``RunState``); every other verdict answers
  ``False`` and lets the SDK go on to the invoker.
- ``on_invoke_tool(ctx, input)``: a blocked call returns the structured refusal as the tool's
  output (the model reads it and the run goes on); an allowed call runs the original tool; an
  approved call is claimed first (``claim_execution``: exactly once, across processes), then run.
  Every run is recorded with ``record_execution``, as the OpenAI adapter records it, so outcomes
  reported later feed memory.

The governed tool's invoker is a plain coroutine rather than the SDK's own wrapper: the SDK then
always consults ``needs_approval`` (for its own decorated tools it skips a callable policy when
validation would change the arguments, and asks a person instead). The original tool runs as it
would have, through a copy of it whose failure formatter also tells us that it failed.

The SDK asks ``needs_approval`` of new calls only: an interrupted call waits until the
``RunState`` says approved or rejected, and then goes straight to the invoker. So the invoker finds
the decision again by the call's id: in this process from memory, in another process (a run
resumed from a serialized ``RunState``) from the audit trail, where each decision of the adapter
is filed under the trace ``agents-<call_id>``.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

import jsonschema
from agents import FunctionTool, RunContextWrapper
from agents.exceptions import UserError
from agents.tool import resolve_function_tool_failure_error_function, set_function_tool_failure_error_function
from agents.tool_context import ToolContext
from agents.tracing import get_current_trace

# What an execution record keeps of an output: the OpenAI adapter's bound, one implementation.
from clearance.adapters.openai.loop import SUMMARY_LIMIT, _summary
from clearance.engine.contract import AsyncEngineAPI
from clearance.errors import ApprovalNotPending, ClearanceError, ConflictError
from clearance.model import Action, Approval, ApprovalStatus, Decision, DecisionResult

__all__ = ["Approver", "ApproverRequired", "Gate", "Settings", "ValueFrom", "trace_for"]

#: Who approved a call that was approved with the SDK's own ``RunState.approve``: a name, or a
#: function of the run's context (the object passed to ``Runner.run(context=...)`` is ``ctx.context``).
Approver = Union[str, Callable[[RunContextWrapper[Any]], "str | None"]]
#: How to read the value at stake or the target from a tool's arguments: an argument's name, or a function.
ValueFrom = Union[str, Callable[[dict[str, Any]], Any]]

CLAIMANT = "clearance-agents"
MEMO_LIMIT = 10_000
#: The failures of the original tool during one invocation (set around it by ``Gate.invoke``).
_FAILED: ContextVar[list[BaseException] | None] = ContextVar("clearance_agents_failed", default=None)


class ApproverRequired(ClearanceError, UserError):
    """A call was approved with the SDK's ``RunState.approve`` but no approver identity is known.

    A ``UserError`` too, so the SDK lets it through as it is rather than wrapping it."""


def trace_for(call_id: str) -> str:
    """The trace a decision of this call is filed under (how another process finds it again)."""
    return f"agents-{call_id}"[:128]


@dataclass
class Entry:
    """What clearance said of one call: its decision, or the output for a call that got none."""

    decision: Decision | None = None
    refusal: dict[str, Any] | None = None


@dataclass
class Settings:
    """What one :func:`~clearance.adapters.agents.govern` fixes for all the tools it governs."""

    engine: AsyncEngineAPI
    actor: str
    domain: str
    context: Mapping[str, Any]
    approver: Approver | None
    #: call id -> what clearance said, from the decision until the invoker ran. Only a cache: an
    #: entry dropped (the oldest, past ``MEMO_LIMIT``; runs interrupted and resumed elsewhere) is
    #: found again in the audit trail.
    calls: dict[str, Entry] = field(default_factory=dict)

    def remember(self, call_id: str, entry: Entry) -> Entry:
        self.calls[call_id] = entry
        while len(self.calls) > MEMO_LIMIT:
            self.calls.pop(next(iter(self.calls)))
        return entry


class Gate:
    """Decides and runs the calls of one function tool."""

    def __init__(self, tool: FunctionTool, settings: Settings, *, value: ValueFrom | None = None,
                 target: ValueFrom | None = None) -> None:  # fmt: skip
        self.original = tool
        self.settings = settings
        self.value_from = value
        self.target_from = target
        self._validator = jsonschema.validators.validator_for(tool.params_json_schema)(tool.params_json_schema)
        # The original tool, as it runs ungoverned; its failure formatter tells us it failed.
        self.inner = copy.copy(tool)
        set_function_tool_failure_error_function(self.inner, self._failed)

    def governed(self) -> FunctionTool:
        """The tool the agent gets instead of the original: same name, schema and settings."""
        tool = copy.copy(self.original)  # the SDK's own copy: subclasses with their own __init__ copy too
        tool.on_invoke_tool, tool.needs_approval = self.invoke, self.needs_approval
        tool.__dict__["_clearance_gate"] = self
        return tool

    # -- the SDK's two questions -------------------------------------------------------------
    async def needs_approval(self, ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        # The SDK asks this of new calls only (an interrupted call is answered in the RunState),
        # so the call is decided here, once per call in this process.
        entry = self.settings.calls.get(call_id)
        if entry is None:
            entry = self.settings.remember(call_id, await self._decide(call_id, params))
        decision = entry.decision
        if decision is None or decision.result is DecisionResult.blocked:
            return False
        if decision.requires_approval:
            approval = await self.settings.engine.get_approval(str(decision.approval_id))
            return waiting(approval)
        own = self.original.needs_approval  # an allowed call still asks a person when the tool itself says so
        if callable(own):
            return bool(await own(ctx, params, call_id))
        return bool(own)

    async def invoke(self, ctx: ToolContext[Any], raw: str) -> Any:
        eng = self.settings.engine
        call_id = ctx.tool_call_id
        # Decided by needs_approval in this process; else a call approved in the RunState, decided
        # in the process that was interrupted (found in the audit trail), or, when the SDK did not
        # ask (the call was approved for good with always_approve), decided now.
        entry = self.settings.calls.pop(call_id, None)
        found = entry is None and (entry := await self.find(call_id)) is not None
        if entry is None:
            entry = await self._decide(call_id, raw)
        if entry.refusal is not None:
            return _json(entry.refusal)
        decision = entry.decision
        assert decision is not None
        if decision.result is DecisionResult.blocked:
            return _json(refusal(decision, "This call was blocked by policy and did not run."))
        if decision.requires_approval:
            approval = await eng.get_approval(str(decision.approval_id))
            if waiting(approval):
                # needs_approval said "wait" for this call, so only the SDK's own approval
                # (RunState.approve) brings it here: it becomes the person's answer in clearance.
                approval = await self._approve_in_clearance(ctx, approval)
            if approval.status is not ApprovalStatus.approved:
                if approval.status is not ApprovalStatus.pending:
                    await eng.record_execution(decision.request_id, "rejected")
                return _json(not_approved(decision, approval))
        if decision.requires_approval or found:
            # An approved call, or one decided before this process (a resumed run): claimed first,
            # so it runs once, and only on the arguments that were decided.
            try:
                await eng.claim_execution(decision.request_id, claimant=CLAIMANT, arguments=_arguments(raw))
            except ConflictError as exc:  # already claimed (run once, elsewhere), not approved, arguments changed
                return _json({"status": "not_run", "verdict": decision.result.value, "request_id": decision.request_id,
                              "reason": str(exc), "message": "This call did not run."})  # fmt: skip
        return await self._run(ctx, raw, decision)

    # -- parts -------------------------------------------------------------------------------
    async def _decide(self, call_id: str, raw: dict[str, Any] | str) -> Entry:
        s, name = self.settings, self.original.name
        try:
            args = _arguments(raw)
            problems = [f"{'/'.join(map(str, e.absolute_path)) or '(arguments)'}: {e.message}"
                        for e in self._validator.iter_errors(args)]  # fmt: skip
            if problems:
                raise ValueError("; ".join(problems))
            value, target = self._read(self.value_from, args), _text(self._read(self.target_from, args))
            action = Action(tool=name, arguments=args, actor=s.actor, domain=s.domain, value=value, target=target,
                            context=self._context(call_id), trace_id=trace_for(call_id))  # fmt: skip
        except (ValueError, TypeError) as exc:
            error = {"error": "invalid_arguments", "tool": name, "message": str(exc)}
            await s.engine.refuse_proposal(name, error["message"], actor=s.actor, domain=s.domain,
                                           trace_id=trace_for(call_id))  # fmt: skip
            return Entry(refusal=error)
        try:
            return Entry(decision=await s.engine.evaluate(action))
        except Exception as exc:  # the engine could not decide: fail closed
            return Entry(refusal={"status": "blocked", "verdict": "blocked", "request_id": None,
                                  "reason": f"engine unavailable, failing closed: {exc}",
                                  "message": "The policy engine could not decide, so this call did not run."})  # fmt: skip

    async def find(self, call_id: str) -> Entry | None:
        """The newest decision of this call (its trace, tool, actor and domain) in the audit trail.

        The arguments are not compared here (the engine's hash of them is keyed, and the audit
        keeps them redacted); the claim checks them: an approved call runs only on the
        arguments that were approved."""
        s = self.settings
        found, after = None, 0
        try:
            while True:
                events = await s.engine.audit_events(trace_id=trace_for(call_id), type="decision.made",
                                                     after_seq=after, limit=100)  # fmt: skip
                for event in events:
                    decision = event.payload.get("decision") or {}
                    if (decision.get("tool"), decision.get("actor"), decision.get("domain")) == (
                            self.original.name, s.actor, s.domain):  # fmt: skip
                        found = decision
                if len(events) < 100:
                    break
                after = events[-1].seq
        except ClearanceError as exc:
            raise ClearanceError(f"cannot look up the decision of resumed call {call_id} ({self.original.name}): {exc}. "
                                 "Resuming a run in another process reads the audit trail: use an engine on the "
                                 "store, or a server key that may read the audit trail.") from exc  # fmt: skip
        return None if found is None else Entry(decision=Decision.model_validate(found))

    async def _approve_in_clearance(self, ctx: RunContextWrapper[Any], approval: Approval) -> Approval:
        approver = self.settings.approver
        who = approver(ctx) if callable(approver) else approver
        if not who:
            raise ApproverRequired(
                f"{self.original.name} (approval {approval.approval_id}) was approved with RunState.approve(), but "
                "clearance records who approved: pass approver= to govern(), or approve with "
                "governance.approve(state, item, approver=...) or `clearance approvals approve`")  # fmt: skip
        try:
            return await self.settings.engine.resolve_approval(
                approval.approval_id, "approved", approver=who, comment="approved in the Agents SDK (RunState.approve)")
        except ApprovalNotPending:  # answered meanwhile, or expired: the recorded answer stands
            return await self.settings.engine.get_approval(approval.approval_id)

    async def _run(self, ctx: ToolContext[Any], raw: str, decision: Decision) -> Any:
        failures: list[BaseException] = []
        token = _FAILED.set(failures)
        try:
            output = await self.inner.on_invoke_tool(ctx, raw)
        except Exception as exc:
            await self.settings.engine.record_execution(decision.request_id, "failed", None, _error(exc))
            raise
        finally:
            _FAILED.reset(token)
        if failures:
            await self.settings.engine.record_execution(decision.request_id, "failed", None, _error(failures[0]))
        else:
            plain = output.model_dump(mode="json") if hasattr(output, "model_dump") else output  # ToolOutputText, ...
            await self.settings.engine.record_execution(decision.request_id, "executed", _summary(plain))
        return output

    async def _failed(self, ctx: RunContextWrapper[Any], error: Exception) -> str | None:
        """The original tool's failure formatter, noting the failure for the execution record."""
        failures = _FAILED.get()
        if failures is not None:
            failures.append(error)
        formatter = resolve_function_tool_failure_error_function(self.original, ctx)
        if formatter is None:
            return None  # the tool is set to raise: the SDK raises, and _run records it
        message = formatter(ctx, error)
        return await message if inspect.isawaitable(message) else message

    def _read(self, source: ValueFrom | None, args: dict[str, Any]) -> Any:
        if source is None:
            return None
        return source(args) if callable(source) else args.get(source)

    def _context(self, call_id: str) -> dict[str, Any]:
        trace = get_current_trace()
        sdk = {"call_id": call_id, "tool": self.original.name}
        if trace is not None and trace.trace_id and trace.trace_id != "no-op":
            sdk["trace_id"] = trace.trace_id
        return {**self.settings.context, "agents_sdk": sdk}


# -- what the model reads ----------------------------------------------------------------------
def refusal(decision: Decision, message: str) -> dict[str, Any]:
    """The structured refusal of a blocked call (the same shape the OpenAI adapter sends)."""
    return {"status": "blocked", "verdict": decision.result.value, "reason": decision.reason,
            "request_id": decision.request_id, "message": message}  # fmt: skip


def not_approved(decision: Decision, approval: Approval) -> dict[str, Any]:
    why = {ApprovalStatus.rejected: "a person rejected it", ApprovalStatus.expired: "its approval expired"}.get(
        approval.status, "its approval still waits for more approvers")
    comment = f" ({approval.comment})" if approval.comment else ""
    return {"status": "rejected" if approval.status is ApprovalStatus.rejected else "not_run",
            "verdict": approval.status.value, "reason": f"{why}{comment}", "request_id": decision.request_id,
            "approval_id": approval.approval_id, "message": f"This call did not run: {why}."}  # fmt: skip


def waiting(approval: Approval) -> bool:
    """Still open: pending and before its deadline (an expired one may not have been swept yet)."""
    return approval.status is ApprovalStatus.pending and approval.expires_at > datetime.now(timezone.utc)


def _arguments(raw: dict[str, Any] | str) -> dict[str, Any]:
    args = raw if isinstance(raw, dict) else (json.loads(raw) if raw and raw.strip() else {})
    if not isinstance(args, dict):
        raise ValueError(f"the arguments must be a JSON object, not {type(args).__name__}")
    return args


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:SUMMARY_LIMIT]
