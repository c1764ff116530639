"""The governed agent loop, written once.

``run_steps`` and ``resume_steps`` are generators: they yield effects (``effects.py``) and receive
their results, so the same logic serves the sync driver, the async driver and, later, the
streaming drivers. Everything the loop must guarantee lives here:

- no tool runs without a durable decision recorded first (``Decide`` precedes ``RunTools``);
- malformed arguments never reach a tool: the model gets a structured error instead;
- blocked calls return a structured refusal to the model, never an exception to the user;
- a call that needs approval suspends the run in the store, and only an approved, claimed call
  runs on resume.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import jsonschema

from clearance._version import __version__
from clearance.adapters.openai import effects as fx
from clearance.adapters.openai.tools import FunctionTool, ToolArgumentsError
from clearance.engine.executions import SHADOW_KEY
from clearance.errors import ApprovalNotPending, ClearanceError, PolicyBlocks, StructuredOutputError
from clearance.model import Action, Approval, ApprovalStatus, Decision, DecisionResult, new_id

SCHEMA_VERSION = 1
SOURCE_VERSION = f"clearance-openai@{__version__}"
SUMMARY_LIMIT = 4000

Steps = Generator[Any, Any, dict[str, Any]]


@dataclass(frozen=True)
class LoopConfig:
    """What a guard fixes for all its runs."""

    tools: Mapping[str, FunctionTool]
    actor: str
    domain: str
    fail_mode: Literal["closed", "open"] = "closed"
    mode: Literal["enforce", "shadow"] = "enforce"
    context: Mapping[str, Any] = field(default_factory=dict)
    #: A call to this tool is not run: its validated arguments are the run's ``structured`` result.
    structured_tool: str | None = None
    #: Tools whose ``decision_mode`` differs from ``mode`` (say one new tool shadowed, the rest enforced).
    tool_modes: Mapping[str, Literal["enforce", "shadow"]] = field(default_factory=dict)

    def mode_for(self, tool: str) -> Literal["enforce", "shadow"]:
        return self.tool_modes.get(tool, self.mode)


@dataclass
class RunState:
    """Everything needed to continue a run, as plain JSON (it is saved while a run waits)."""

    run_id: str
    trace_id: str
    request: dict[str, Any]
    items: list[dict[str, Any]]
    store: bool
    max_turns: int
    turn: int = 0
    previous_response_id: str | None = None
    new_items: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    call_order: list[str] = field(default_factory=list)
    last_response: dict[str, Any] | None = None
    stream: bool = False
    #: What the run hands back instead of running: the structured tool's arguments, and the
    #: allowed calls of declared tools. Either ends the run after the turn that produced it.
    structured: Any = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    handoff: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        return cls(**dict(data))


def new_state(
    *,
    input_items: list[dict[str, Any]],
    request: dict[str, Any],
    store: bool,
    max_turns: int,
    trace_id: str | None = None,
    stream: bool = False,
) -> RunState:
    return RunState(
        stream=stream,
        run_id=new_id("run"),
        trace_id=trace_id or new_id("trc"),
        request=request,
        items=list(input_items),
        new_items=list(input_items),
        store=store,
        max_turns=max_turns,
    )


# -- wire: Responses API ---------------------------------------------------------------------
def build_request(state: RunState) -> dict[str, Any]:
    """The next ``responses.create`` body: the whole transcript, or only new items when chained."""
    req = dict(state.request)
    if state.store and state.previous_response_id:
        req["previous_response_id"] = state.previous_response_id
        req["input"] = list(state.new_items)
    else:
        req["input"] = list(state.items)
    if state.stream:
        req["stream"] = True
    return req


_REPLAYED = {"function_call", "reasoning", "message"}


def _replayable(item: dict[str, Any]) -> dict[str, Any] | None:
    """An output item as it must be sent back when we carry the transcript ourselves."""
    kind = item.get("type")
    if kind not in _REPLAYED:
        return None
    clean = {k: v for k, v in item.items() if v is not None}
    if kind == "message":
        clean["content"] = [{k: v for k, v in part.items() if v is not None} for part in clean.get("content", [])]
    return clean


def output_text(response: Mapping[str, Any] | None) -> str:
    if not response:
        return ""
    parts = []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            parts.extend(p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text")
    return "".join(parts)


def function_calls(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [i for i in response.get("output") or [] if i.get("type") == "function_call"]


# -- events ----------------------------------------------------------------------------------
def _decision_view(decision: Decision | None, *, reason: str | None = None, result: str | None = None) -> dict[str, Any]:
    if decision is None:
        allowed = result == "allowed"
        return {"allowed": allowed, "result": result, "reason": reason, "request_id": None,
                "requires_approval": False, "risk_score": None, "matched_rules": [], "precedents": [],
                "policy_version": None, "approval_id": None}  # fmt: skip
    return {
        "allowed": decision.allowed,
        "result": decision.result.value,
        "reason": decision.reason,
        "request_id": decision.request_id,
        "requires_approval": decision.requires_approval,
        "risk_score": decision.risk_score,
        "matched_rules": [m.model_dump(mode="json") for m in decision.matched_rules],
        "shadow_rules": [m.model_dump(mode="json") for m in decision.shadow_rules],
        "precedents": [p.model_dump(mode="json") for p in decision.precedents],
        "policy_version": decision.policy_version,
        "approval_id": decision.approval_id,
        **({"patches": [p.model_dump(mode="json") for p in decision.patches]} if decision.patches else {}),
    }


def _event(state: RunState, *, tool: str, call_id: str, arguments: Any, status: str, decision: dict[str, Any],
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    event = {
        "event_id": new_id("evt"),
        "seq": len(state.events) + 1,
        "trace_id": state.trace_id,
        "run_id": state.run_id,
        "request_id": decision.get("request_id"),
        "allowed": decision.get("allowed"),  # top level too: audit hooks read event["allowed"] (see the seeds)
        "schema_version": SCHEMA_VERSION,
        "source_version": SOURCE_VERSION,
        "tool": tool,
        "call_id": call_id,
        "arguments": arguments,
        "status": status,
        "decision": decision,
        **extra,
    }
    state.events.append(event)
    return event


def _to_model(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload, default=str, ensure_ascii=False)


def _summary(output: Any) -> Any:
    text = _to_model(output)
    return output if len(text) <= SUMMARY_LIMIT and not isinstance(output, str) else text[:SUMMARY_LIMIT]


def _set_output(state: RunState, call_id: str, payload: Any) -> None:
    state.outputs[call_id] = {"type": "function_call_output", "call_id": call_id, "output": _to_model(payload)}


def _refusal(decision: dict[str, Any], message: str) -> dict[str, Any]:
    return {"status": "blocked", "verdict": decision["result"], "reason": decision["reason"],
            "request_id": decision["request_id"], "message": message}  # fmt: skip


# -- the steps -------------------------------------------------------------------------------
def run_steps(state: RunState, cfg: LoopConfig) -> Steps:
    """Ask the model, govern its calls, repeat until it answers without calls or turns run out."""
    while True:
        if state.turn >= state.max_turns:
            return finish(state, "max_turns")
        response = yield fx.CallModel(build_request(state), stream=state.stream)
        state.last_response = response
        if response.get("status") == "failed":
            # Nothing usable arrived (a failed response, a stream cut off or erroring): no call
            # runs, nothing partial joins the transcript, and the failed turn is not counted.
            # The run is kept in the store so ``retry_run(retry_id)`` can ask the model again.
            retry_id = new_id("rty")
            yield fx.SaveRun(state.run_id, state.to_dict(), [retry_id])
            return finish(state, "failed") | {"retry_id": retry_id}
        state.turn += 1
        state.previous_response_id = response.get("id")
        state.new_items = []
        for item in response.get("output") or []:
            replay = _replayable(item)
            if replay is not None:
                state.items.append(replay)
        if response.get("status") == "incomplete":
            # Cut short (say, max_output_tokens): a call in it may be truncated, so none runs.
            return finish(state, "incomplete")
        calls = function_calls(response)
        if not calls:
            return _completed(state)
        state.call_order = [c["call_id"] for c in calls]
        state.outputs = {}
        yield from _govern(state, cfg, calls)
        if state.pending:
            yield fx.SaveRun(state.run_id, state.to_dict(), [p["approval_id"] for p in state.pending])
            return finish(state, "approval_required")
        _flush_outputs(state)
        if state.handoff:
            return finish(state, "completed")  # what the caller asked for is here; no model turn needs it


def _flush_outputs(state: RunState) -> None:
    outs = [state.outputs[cid] for cid in state.call_order if cid in state.outputs]
    state.items.extend(outs)
    state.new_items = list(outs)
    state.outputs = {}
    state.call_order = []


def _govern(state: RunState, cfg: LoopConfig, calls: list[dict[str, Any]]) -> Generator[Any, Any, None]:
    """Decide every call of a turn first, then run the allowed ones together."""
    runnable: list[tuple[fx.ToolRun, dict[str, Any]]] = []
    for call in calls:
        name, call_id, raw = call.get("name", ""), call["call_id"], call.get("arguments", "")
        tool = cfg.tools.get(name)
        if tool is None and name == cfg.structured_tool:
            # The structured tool may be named without a schema (the engram's example does):
            # any JSON object the model sends is the extraction.
            yield from _capture_unschematised(state, call_id, name, raw)
            continue
        if tool is None:
            error = {"error": "unknown_tool", "tool": name, "message": f"there is no tool named {name!r}",
                     "available": sorted(cfg.tools)}  # fmt: skip
            _set_output(state, call_id, error)
            yield fx.Refuse(name, error["message"], state.trace_id)
            yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=raw, status="failed",
                                 decision=_decision_view(None, result="blocked", reason="unknown tool"), error=error["message"]))  # fmt: skip
            continue
        try:
            args = tool.parse_arguments(raw)
            action = Action(tool=name, arguments=args, actor=cfg.actor, domain=cfg.domain, value=tool.value(args),
                            target=tool.target(args), context=_context(cfg, name), trace_id=state.trace_id)  # fmt: skip
        except (ToolArgumentsError, ValueError, TypeError) as exc:
            error = exc.to_model_output() if isinstance(exc, ToolArgumentsError) else {
                "error": "invalid_arguments", "tool": name, "message": str(exc)}  # fmt: skip
            _set_output(state, call_id, error)
            yield fx.Refuse(name, error["message"], state.trace_id)
            yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=raw, status="failed",
                                 decision=_decision_view(None, result="blocked", reason="invalid arguments"),
                                 error=error["message"]))  # fmt: skip
            continue
        if name == cfg.structured_tool:
            # Extraction, not action: nothing runs, so there is nothing to decide.
            state.structured, state.handoff = args, True
            _set_output(state, call_id, {"status": "captured"})
            continue
        result = yield fx.Decide(action)
        if isinstance(result, BaseException):
            # The engine could not decide: fail closed unless the guard was told otherwise.
            if cfg.fail_mode == "open":
                view = _decision_view(None, result="allowed", reason=f"engine unavailable, failing open: {result}")
                runnable.append((fx.ToolRun(call_id, name, args), {"decision": view, "fail_open": True}))
            else:
                view = _decision_view(None, result="blocked", reason=f"engine unavailable, failing closed: {result}")
                _set_output(state, call_id, _refusal(view, "The policy engine could not decide, so this call did not run."))
                yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=args, status="blocked", decision=view,
                                     error=str(result)))  # fmt: skip
            continue
        decision: Decision = result
        view = _decision_view(decision)
        mode = cfg.mode_for(name)
        # A constrained allow: what was decided (and may run) is the patched call; the model is told.
        changed = {"patches": view["patches"]} if decision.patches else {}
        args = decision.patched(args)
        if tool.declared and (mode == "shadow" or decision.result is DecisionResult.allowed):
            yield from _hand_off(state, call_id, name, args, view)
        elif mode == "shadow" or decision.result is DecisionResult.allowed:
            runnable.append((fx.ToolRun(call_id, name, args, decision.request_id),
                             {"decision": view, "enforced": mode == "enforce", **changed}))  # fmt: skip
        elif decision.result is DecisionResult.blocked:
            _set_output(state, call_id, _refusal(view, "This call was blocked by policy and did not run."))
            yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=args, status="blocked", decision=view))
        else:
            state.pending.append({"call_id": call_id, "tool": name, "arguments": args, "request_id": decision.request_id,
                                  "approval_id": decision.approval_id, "decision": view, **changed})  # fmt: skip
            yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=args, status="approval_required",
                                 decision=view, approval_id=decision.approval_id))  # fmt: skip
    if runnable:
        results = yield fx.RunTools([r for r, _ in runnable])
        reports = []
        for (run, meta), res in zip(runnable, results):
            reports += yield from _after_run(state, run, res, meta["decision"], {k: v for k, v in meta.items() if k != "decision"})
        if reports:
            yield fx.Record(reports)


def _context(cfg: LoopConfig, tool: str) -> dict[str, Any]:
    """The caller's context; in shadow mode (the guard's, or this tool's decision_mode) it says so,
    since the call will run whatever the verdict."""
    context = dict(cfg.context)
    if cfg.mode_for(tool) == "shadow":
        context[SHADOW_KEY] = "shadow"
    return context


def _capture_unschematised(state: RunState, call_id: str, name: str, raw: Any) -> Generator[Any, Any, None]:
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw.strip() else dict(raw or {})
    except ValueError as exc:
        args = exc
    if not isinstance(args, dict):
        error = {"error": "invalid_arguments", "tool": name, "message": f"arguments must be a JSON object: {args}"}
        _set_output(state, call_id, error)
        yield fx.Refuse(name, error["message"], state.trace_id)
        yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=raw, status="failed",
                             decision=_decision_view(None, result="blocked", reason="invalid arguments"), error=error["message"]))  # fmt: skip
        return
    state.structured, state.handoff = args, True
    _set_output(state, call_id, {"status": "captured"})


def _hand_off(state: RunState, call_id: str, name: str, args: dict[str, Any], view: dict[str, Any],
              **extra: Any) -> Generator[Any, Any, None]:  # fmt: skip
    """An allowed call of a declared tool goes back to the caller, who carries it out."""
    state.handoff = True
    state.tool_calls.append({"call_id": call_id, "name": name, "arguments": args, "request_id": view.get("request_id"),
                             "decision": view})  # fmt: skip
    _set_output(state, call_id, {"status": "handed_off", "request_id": view.get("request_id")})
    yield fx.Emit(_event(state, tool=name, call_id=call_id, arguments=args, status="handed_off", decision=view, **extra))


def _after_run(state: RunState, run: fx.ToolRun, res: fx.ToolResult, view: dict[str, Any],
               extra: dict[str, Any]) -> Generator[Any, Any, list[tuple[str, str, Any, str | None]]]:  # fmt: skip
    """The tool's output for the model and its event; returns the execution report to record."""
    status = "failed" if res.error is not None else "executed"
    told = _told_changes(extra.get("patches"))
    if res.error is not None:
        _set_output(state, run.call_id, {"status": "failed", "error": res.error, **told})
    else:
        _set_output(state, run.call_id, {"status": "executed_with_changes", **told, "output": res.output} if told else res.output)
    yield fx.Emit(_event(state, tool=run.tool, call_id=run.call_id, arguments=run.arguments, status=status,
                         decision=view, output=res.output if res.error is None else None, error=res.error, **extra))  # fmt: skip
    if not view.get("request_id"):
        return []  # failing open: no decision to record against
    return [(view["request_id"], status, _summary(res.output) if res.error is None else None, res.error)]


def _told_changes(patches: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What the model hears of arguments policy changed before the call ran (nothing when none)."""
    if not patches:
        return {}
    changes = [{"argument": p["argument"], "from": p["original"], "to": p["value"], "rule_id": p["rule_id"]} for p in patches]
    said = "; ".join(f"{c['argument']} {json.dumps(c['from'], default=str)} -> {json.dumps(c['to'], default=str)}"
                     f" (rule {c['rule_id']})" for c in changes)  # fmt: skip
    return {"changed_arguments": changes,
            "message": f"Policy changed the arguments before this call ran: {said}. The result is of the changed call."}  # fmt: skip


def _blocked_since(state: RunState, entry: dict[str, Any], view: dict[str, Any], approval_id: str,
                   refused: PolicyBlocks) -> Generator[Any, Any, None]:  # fmt: skip
    """An approved call whose claim the rules in force refuse (they changed since, and block it):
    it does not run, its slots are given back, and the model hears why, as of any blocked call."""
    view.update(allowed=False, result="blocked", reason=str(refused), approval_status="approved")
    _set_output(state, entry["call_id"], _refusal(view, "This call was approved, but the policy has changed since "
                                                        "and now blocks it; it did not run."))  # fmt: skip
    yield fx.Record([(entry["request_id"], "not_run", None, str(refused))])
    yield fx.Emit(_event(state, tool=entry["tool"], call_id=entry["call_id"], arguments=entry["arguments"],
                         status="blocked", decision=view, approval_id=approval_id))  # fmt: skip


def resume_steps(state: RunState, cfg: LoopConfig, approval_id: str) -> Steps:
    """Continue a suspended run once ``approval_id`` is answered; the loop goes on when none wait."""
    entry = next((p for p in state.pending if p["approval_id"] == approval_id), None)
    if entry is None:
        raise ClearanceError(f"run {state.run_id} is not waiting for approval {approval_id}")
    approval: Approval = yield fx.GetApproval(approval_id)
    if approval.status is ApprovalStatus.pending:
        raise ApprovalNotPending(f"approval {approval_id} is still pending")
    state.pending.remove(entry)
    view = dict(entry["decision"])
    if approval.status is ApprovalStatus.approved:
        claimed = yield fx.Claim(entry["request_id"], entry["arguments"])
        if isinstance(claimed, PolicyBlocks):
            yield from _blocked_since(state, entry, view, approval_id, claimed)
        elif isinstance(claimed, BaseException):
            raise claimed
        else:
            view.update(allowed=True, approval_status="approved")
            tool = cfg.tools.get(entry["tool"])
            if tool is not None and tool.declared:
                yield from _hand_off(state, entry["call_id"], entry["tool"], entry["arguments"], view,
                                     approval_id=approval_id, approved_by=approval.resolved_by)  # fmt: skip
            else:
                run = fx.ToolRun(entry["call_id"], entry["tool"], entry["arguments"], entry["request_id"])
                [res] = yield fx.RunTools([run])
                changed = {"patches": entry["patches"]} if entry.get("patches") else {}
                reports = yield from _after_run(state, run, res, view, {"approval_id": approval_id,
                                                "approved_by": approval.resolved_by, **changed})  # fmt: skip
                if reports:
                    yield fx.Record(reports)
    else:
        view.update(approval_status=approval.status.value)
        why = "a person rejected it" if approval.status is ApprovalStatus.rejected else "its approval expired"
        comment = f" ({approval.comment})" if approval.comment else ""
        _set_output(state, entry["call_id"], {
            "status": "rejected", "verdict": approval.status.value, "reason": f"{why}{comment}",
            "request_id": entry["request_id"], "message": f"This call did not run: {why}.",
        })  # fmt: skip
        yield fx.Record([(entry["request_id"], "rejected", None, None)])
        yield fx.Emit(_event(state, tool=entry["tool"], call_id=entry["call_id"], arguments=entry["arguments"],
                             status="rejected", decision=view, approval_id=approval_id, comment=approval.comment))  # fmt: skip
    if state.pending:
        yield fx.SaveRun(state.run_id, state.to_dict(), [p["approval_id"] for p in state.pending])
        return finish(state, "approval_required")
    _flush_outputs(state)
    if state.handoff:
        return finish(state, "completed")
    return (yield from run_steps(state, cfg))


def _completed(state: RunState) -> dict[str, Any]:
    """The final answer; with a JSON response format, also parsed and checked into ``structured``."""
    result = finish(state, "completed")
    fmt = (state.request.get("text") or {}).get("format") or {}
    if result["structured"] is None and fmt.get("type") in ("json_schema", "json_object") and not _refused(state):
        result["structured"] = _parse_structured(result, fmt)
    return result


def _refused(state: RunState) -> bool:
    return any(p.get("type") == "refusal" for i in (state.last_response or {}).get("output") or []
               if i.get("type") == "message" for p in i.get("content") or [])  # fmt: skip


def _parse_structured(result: dict[str, Any], fmt: Mapping[str, Any]) -> Any:
    text = result["output_text"]
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StructuredOutputError(f"the model's answer is not JSON ({exc}): {text[:200]!r}", result=result,
                                    errors=[str(exc)]) from None  # fmt: skip
    if fmt.get("type") == "json_schema":
        validator_cls = jsonschema.validators.validator_for(fmt["schema"], default=jsonschema.Draft202012Validator)
        problems = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator_cls(fmt["schema"]).iter_errors(data)]  # fmt: skip
        if problems:
            raise StructuredOutputError(f"the model's answer does not fit {fmt.get('name', 'the schema')}: "
                                        f"{'; '.join(problems)}", result=result | {"structured": data}, errors=problems)  # fmt: skip
    return data


def finish(state: RunState, status: str) -> dict[str, Any]:
    """The result shape users know from bighub-openai, plus what a waiting run needs."""
    return {
        # The provider's own response: a chat.completion when the guard speaks Chat Completions.
        "llm_response": (state.last_response or {}).get("_raw", state.last_response),
        "output_text": output_text(state.last_response),
        "execution": {"events": list(state.events), "last": state.events[-1] if state.events else None},
        "status": status,
        "run_id": state.run_id,
        "trace_id": state.trace_id,
        "structured": state.structured,
        "tool_calls": list(state.tool_calls),
        "pending_approvals": [
            {k: p[k] for k in ("approval_id", "request_id", "tool", "arguments", "call_id")} | {"reason": p["decision"]["reason"]}
            for p in state.pending
        ],
    }
