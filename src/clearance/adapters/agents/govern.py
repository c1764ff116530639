"""Put an existing Agents SDK agent under clearance with one call.

:func:`govern` swaps each function tool of the agent (and of the agents it hands off to) for a
governed twin (:class:`~clearance.adapters.agents.gate.Gate`), in place, so the ``Agent`` the user
already has, and the ``RunState`` workflow around it, stay as they are; the tools of its MCP
servers get governed twins as the SDK lists them.

:class:`Governance` answers for the interruptions. The SDK keeps an interruption until the
``RunState`` itself says approved or rejected, so an answer given elsewhere (``clearance approvals
approve``, the API) reaches the run through :meth:`Governance.apply_approvals` before it resumes;
:meth:`Governance.approve` / :meth:`Governance.reject` answer in clearance and in the state at once.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from typing import Any

from agents import Agent, FunctionTool, RunState, ToolApprovalItem

from clearance.adapters.agents.gate import Approver, Entry, Gate, Settings, ValueFrom, not_approved, waiting
from clearance.engine.aio import AsyncEngine
from clearance.engine.contract import AsyncEngineAPI, EngineAPI
from clearance.errors import ClearanceError
from clearance.model import Approval, ApprovalStatus

__all__ = ["Governance", "govern"]


def govern(
    agent: Agent[Any],
    engine: EngineAPI | AsyncEngineAPI,
    *,
    actor: str,
    domain: str = "default",
    value: Mapping[str, ValueFrom] | None = None,
    target: Mapping[str, ValueFrom] | None = None,
    context: Mapping[str, Any] | None = None,
    approver: Approver | None = None,
) -> Governance:
    """Govern ``agent``'s function tools (and those of the agents it hands off to) with ``engine``.

    ``value`` / ``target`` map a tool's name to the argument (or a function of the arguments)
    holding the money or units at stake and the call's target, for the rules. ``context`` is added
    to every action. ``approver`` names who approved a call approved with the SDK's own
    ``RunState.approve(item)``: a string, or a function of the run context wrapper (for example
    ``lambda ctx: ctx.context["user"]``). The tools of the agent's MCP servers are governed the
    same way, as the servers list them. Other tools (hosted, shell, computer, patch) are listed in
    ``Governance.ungoverned``.
    """
    asynchronous = inspect.iscoroutinefunction(getattr(engine, "evaluate", None))
    aengine: AsyncEngineAPI = engine if asynchronous else AsyncEngine(engine)  # type: ignore[assignment,arg-type]
    settings = Settings(engine=aengine, actor=actor, domain=domain, context=dict(context or {}), approver=approver)
    governance = Governance(settings)
    value, target = dict(value or {}), dict(target or {})
    agents = list(_agents(agent))
    unknown = (set(value) | set(target)) - {t.name for one in agents for t in one.tools if isinstance(t, FunctionTool)}
    if unknown and not any(one.mcp_servers for one in agents):  # refused before anything is changed (MCP
        # tools are known only once their servers list them)
        raise ClearanceError(f"value= or target= names tools the agent does not have: {', '.join(sorted(unknown))}")
    for one in agents:
        tools = []
        for tool in one.tools:
            if isinstance(tool, FunctionTool):
                earlier = tool.__dict__.get("_clearance_gate")  # governed again: the new settings, never two gates
                original = earlier.original if earlier is not None else tool
                gate = Gate(original, settings, value=value.get(tool.name), target=target.get(tool.name))
                tool = gate.governed()
                governance.gates[tool.name] = gate
            else:
                governance.ungoverned.append(f"{one.name}: {getattr(tool, 'name', type(tool).__name__)}")
            tools.append(tool)
        one.tools = tools
        if one.mcp_servers:
            _govern_mcp_tools(one, settings, governance, value, target)
    governance.agent = agent
    return governance


class Governance:
    """What :func:`govern` set up: the governed tools, and the answers to their interruptions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agent: Agent[Any] | None = None
        #: tool name -> its gate
        self.gates: dict[str, Gate] = {}
        #: Tools left ungoverned, with the agent they belong to (hosted tools, shell, computer, ...).
        self.ungoverned: list[str] = []

    async def approval(self, item: ToolApprovalItem) -> Approval | None:
        """The clearance approval an interruption waits for (None when the tool itself asked)."""
        entry = await self._entry(item)
        if entry is None or entry.decision is None or not entry.decision.approval_id:
            return None
        return await self.settings.engine.get_approval(entry.decision.approval_id)

    async def apply_approvals(self, state: RunState[Any]) -> list[ToolApprovalItem]:
        """Carry clearance's answers into ``state`` (approved: ``state.approve``; rejected or
        expired: ``state.reject`` with the reason); returns the interruptions still waiting."""
        still = []
        for item in state.get_interruptions():
            approval = await self.approval(item)
            if approval is None or waiting(approval):
                still.append(item)
            elif approval.status is ApprovalStatus.approved:
                state.approve(item)
            else:
                if approval.status is not ApprovalStatus.pending:
                    await self.settings.engine.record_execution(approval.request_id, "rejected")
                else:
                    approval = approval.model_copy(update={"status": ApprovalStatus.expired})
                decision = await self.settings.engine.get_decision(approval.request_id)
                state.reject(item, rejection_message=json.dumps(not_approved(decision, approval), ensure_ascii=False))
        return still

    async def approve(self, state: RunState[Any], item: ToolApprovalItem, *, approver: str,
                      comment: str | None = None) -> Approval | None:  # fmt: skip
        """Approve in clearance as ``approver``, then in ``state`` once clearance counts it approved
        (a call that needs two approvers stays interrupted after the first)."""
        approval = await self.approval(item)
        if approval is not None:
            approval = await self.settings.engine.resolve_approval(approval.approval_id, "approved", approver=approver,
                                                                   comment=comment)  # fmt: skip
            if approval.status is not ApprovalStatus.approved:
                return approval
        state.approve(item)
        return approval

    async def reject(self, state: RunState[Any], item: ToolApprovalItem, *, approver: str,
                     comment: str | None = None) -> Approval | None:  # fmt: skip
        """Reject in clearance as ``approver`` and in ``state``; the model is told why."""
        approval = await self.approval(item)
        if approval is None:
            state.reject(item)
            return None
        approval = await self.settings.engine.resolve_approval(approval.approval_id, "rejected", approver=approver,
                                                               comment=comment)  # fmt: skip
        await self.settings.engine.record_execution(approval.request_id, "rejected")
        decision = await self.settings.engine.get_decision(approval.request_id)
        state.reject(item, rejection_message=json.dumps(not_approved(decision, approval), ensure_ascii=False))
        return approval

    async def _entry(self, item: ToolApprovalItem) -> Entry | None:
        raw = item.raw_item
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        gate = self.gates.get(item.tool_name or "")
        if gate is None or not call_id:
            return None
        entry = self.settings.calls.get(call_id)
        return entry if entry is not None else await gate.find(call_id)


def _govern_mcp_tools(agent: Agent[Any], settings: Settings, governance: Governance, value: Mapping[str, ValueFrom],
                      target: Mapping[str, ValueFrom]) -> None:  # fmt: skip
    """Govern the tools of the agent's MCP servers as they are listed, turn by turn.

    The SDK turns each server's tools into function tools when it asks ``agent.get_mcp_tools``;
    the agent's own method is shadowed by one that governs what the class's method returns (so
    governing again replaces it rather than wrapping it twice)."""
    fetch = type(agent).get_mcp_tools.__get__(agent)

    async def get_mcp_tools(run_context: Any) -> list[Any]:
        tools = []
        for tool in await fetch(run_context):
            if isinstance(tool, FunctionTool):
                gate = Gate(tool, settings, value=value.get(tool.name), target=target.get(tool.name))
                governance.gates[tool.name] = gate
                tool = gate.governed()
            tools.append(tool)
        return tools

    agent.get_mcp_tools = get_mcp_tools  # type: ignore[method-assign]


def _agents(agent: Agent[Any]) -> Iterable[Agent[Any]]:
    """The agent and every agent reachable through its handoffs, once each."""
    seen: set[int] = set()
    todo = [agent]
    while todo:
        one = todo.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        yield one
        todo += [h for h in one.handoffs if isinstance(h, Agent)]
