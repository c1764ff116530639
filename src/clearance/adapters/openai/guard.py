"""GuardedOpenAI and AsyncGuardedOpenAI: OpenAI's Responses API with every tool call governed.

Both classes share configuration and tool registration (``_GuardBase``); each is a thin driver
that carries out the effects the loop in ``loop.py`` asks for, blocking or awaiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar


from clearance import telemetry
from clearance.adapters.openai import effects as fx
from clearance.adapters.openai.loop import LoopConfig, RunState, Steps, _decision_view, new_state, resume_steps, run_steps
from clearance.adapters.openai.resilience import CircuitBreaker, ResilienceConfig
from clearance.adapters.openai.provider import AzureSettings, make_client
from clearance.adapters.openai.wire import API, wire_for
from clearance.adapters.openai.dispatch import action_request, dispatching
from clearance.adapters.openai.structured import ResponseFormat, text_format, typed
from clearance.adapters.openai.tools import FunctionTool, declared_tool, function_tool, strict_schema_problems
from clearance.engine import AsyncEngine, Engine
from clearance.engine.contract import AsyncEngineAPI, EngineAPI
from clearance.errors import AlreadyClaimed, ApprovalNotPending, ClearanceError, NotFound
from clearance.model import Action, Approval, ApprovalStatus

__all__ = ["AsyncGuardedOpenAI", "GuardedOpenAI"]

log = logging.getLogger("clearance.openai")
F = TypeVar("F", bound=Callable[..., Any])


def _messages_to_input(messages: Iterable[Mapping[str, Any]] | None, input: Any) -> list[dict[str, Any]]:
    if input is not None:
        if isinstance(input, str):
            return [{"role": "user", "content": input}]
        return [dict(i) for i in input]
    if messages is None:
        raise ValueError("give messages=[...] or input=...")
    return [dict(m) for m in messages]


@contextlib.contextmanager
def _retry_errors(retry_id: str) -> Iterator[None]:
    """The engine speaks of approvals when a saved run cannot be taken; say it of retries."""
    try:
        yield
    except AlreadyClaimed:
        raise AlreadyClaimed(f"retry id {retry_id} was already used: the run was retried") from None
    except NotFound:
        raise NotFound(f"no failed run has retry id {retry_id!r}") from None


#: ``decision_mode`` values: ours, and bighub-openai's ``submit`` / ``submit_v2``, which chose
#: between two endpoints of its hosted backend; here there is one decision path, and both
#: mean what they meant to the program: the decision is enforced.
DECISION_MODES: dict[str, Literal["enforce", "shadow"]] = {
    "enforce": "enforce", "shadow": "shadow", "submit": "enforce", "submit_v2": "enforce"}  # fmt: skip


def _decision_mode(value: Any, what: str = "decision_mode") -> Literal["enforce", "shadow"]:
    try:
        return DECISION_MODES[value]
    except (KeyError, TypeError):
        raise ValueError(f"{what} must be 'enforce' or 'shadow' (or bighub-openai's 'submit', 'submit_v2'), "
                         f"not {value!r}") from None  # fmt: skip


#: Which driver method carries out each effect; both drivers implement every one of them.
_HANDLERS: dict[type, str] = {
    fx.CallModel: "_call_model",
    fx.Decide: "_decide",
    fx.RunTools: "_run_tools",
    fx.Record: "_record",
    fx.Refuse: "_refuse",
    fx.Emit: "_emit_effect",
    fx.Claim: "_claim",
    fx.GetApproval: "_get_approval",
    fx.SaveRun: "_save_run",
}


class _GuardBase:
    def __init__(
        self,
        openai_api_key: str | None = None,
        *,
        client: Any = None,
        actor: str = "agent",
        domain: str = "default",
        engine: EngineAPI | AsyncEngineAPI | None = None,
        api: API = "responses",
        fail_mode: Literal["closed", "open"] = "closed",
        mode: Literal["enforce", "shadow"] = "enforce",
        decision_mode: str | None = None,
        on_decision: Callable[[dict[str, Any]], Any] | None = None,
        provider_timeout_seconds: float = 60.0,
        provider_max_retries: int = 2,
        provider_retry_backoff_seconds: float = 0.5,
        provider_retry_max_backoff_seconds: float = 8.0,
        provider_retry_jitter_seconds: float = 0.25,
        provider_circuit_breaker_failures: int = 0,
        provider_circuit_breaker_reset_seconds: float = 30.0,
        extra_create_args: Mapping[str, Any] | None = None,
        memory_enabled: bool = True,
        memory_ingest_timeout_ms: int = 300,
        memory_source: str | None = None,
        max_turns: int = 10,
        approver: str | None = None,
        base_url: str | None = None,
        context: Mapping[str, Any] | None = None,
        model: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        deployment: str | None = None,
        azure_ad_token_provider: Callable[[], Any] | None = None,
        structured_tool_name: str | None = None,
        dispatch_tools: Mapping[str, str] | None = None,
        dispatcher: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        if fail_mode not in ("closed", "open"):
            raise ValueError("fail_mode must be 'closed' or 'open'")
        mode = _decision_mode(mode, "mode")
        if decision_mode is not None:
            # One knob under two names: mode= (ours) and decision_mode= (bighub-openai's).
            chosen = _decision_mode(decision_mode)
            if mode != "enforce" and chosen != mode:
                raise ValueError(f"mode={mode!r} and decision_mode={decision_mode!r} disagree; give one of them")
            mode = chosen
        Action(tool="-", actor=actor, domain=domain)  # an actor or domain no call could carry is refused now, not per call
        self.wire = wire_for(api)
        self.api = api
        self.actor, self.domain = actor, domain
        self.fail_mode, self.mode = fail_mode, mode
        self.on_decision = on_decision
        self.extra_create_args = dict(extra_create_args or {})
        self.memory_enabled = memory_enabled
        # bighub-openai's bound on its best-effort memory upload. Here memory learns inside the
        # engine, from the audit trail, so no run ever waits on it: accepted, and unused.
        self.memory_ingest_timeout_ms = memory_ingest_timeout_ms
        self.max_turns = max_turns
        self.approver = approver
        self.context = dict(context or {})
        if memory_source is not None:
            # Where these calls come from, kept with every decision (bighub-openai's memory_source).
            self.context.setdefault("memory_source", memory_source)
        if not memory_enabled:
            # Decisions stay durable and audited; memory leaves these calls out of its cases.
            self.context["memory"] = False
        self.resilience = ResilienceConfig(
            timeout_seconds=provider_timeout_seconds, max_retries=provider_max_retries,
            backoff_seconds=provider_retry_backoff_seconds, max_backoff_seconds=provider_retry_max_backoff_seconds,
            jitter_seconds=provider_retry_jitter_seconds, breaker_failures=provider_circuit_breaker_failures,
            breaker_reset_seconds=provider_circuit_breaker_reset_seconds,
        )  # fmt: skip
        self.breaker = CircuitBreaker(provider_circuit_breaker_failures, provider_circuit_breaker_reset_seconds)
        self._tools: dict[str, FunctionTool] = {}
        self._modes: dict[str, Literal["enforce", "shadow"]] = {}
        self.structured_tool_name = structured_tool_name
        self.dispatch_tools = dict(dispatch_tools or {})
        if self.dispatch_tools and dispatcher is None:
            raise ValueError("dispatch_tools needs a dispatcher: a callable, or DispatchWebhook(url, secret)")
        self.dispatcher = dispatcher
        azure = None
        if client is None and base_url is None:
            azure = AzureSettings.resolve(endpoint=azure_endpoint, api_version=api_version, deployment=deployment,
                                          api_key=openai_api_key, token_provider=azure_ad_token_provider)  # fmt: skip
        self.azure = azure
        # The model runs use when they name none: on Azure, the deployment.
        self.model = model or (azure.deployment if azure else None)
        self.client = self._make_client(client, openai_api_key, base_url, azure)
        self.engine = engine

    # -- set-up -----------------------------------------------------------------------------
    _is_async = False

    def _make_client(self, client: Any, api_key: str | None, base_url: str | None, azure: AzureSettings | None) -> Any:
        if client is None:
            client = make_client(is_async=self._is_async, api_key=api_key, base_url=base_url, azure=azure)
        # Our retries replace the SDK's, so a provider retry is counted and bounded once.
        return client.with_options(max_retries=0, timeout=self.resilience.timeout_seconds)

    def tool(
        self,
        name: str | Callable[..., Any] | None = None,
        fn: Callable[..., Any] | None = None,
        *,
        value_from_args: Callable[[dict[str, Any]], float | None] | None = None,
        target_from_args: Callable[[dict[str, Any]], str | None] | None = None,
        parameters_schema: dict[str, Any] | None = None,
        description: str | None = None,
        strict: bool = True,
        decision_mode: str | None = None,
    ) -> Any:
        """Register a tool: ``guard.tool("name", fn, ...)``, ``guard.tool(fn)`` or ``@guard.tool(...)``.

        ``decision_mode="shadow"`` observes this tool only (decided and recorded, always run)
        while the guard's other tools stay enforced; ``"enforce"`` the reverse.
        """
        if callable(name) and fn is None:
            name, fn = None, name
        if fn is None:
            def decorator(f: F) -> F:
                self.tool(name, f, value_from_args=value_from_args, target_from_args=target_from_args,  # type: ignore[arg-type]
                          parameters_schema=parameters_schema, description=description, strict=strict,
                          decision_mode=decision_mode)  # fmt: skip
                return f

            return decorator
        spec = function_tool(fn, name=name, description=description, parameters_schema=parameters_schema,  # type: ignore[arg-type]
                             value_from_args=value_from_args, target_from_args=target_from_args, strict=strict)  # fmt: skip
        return self._add(spec, decision_mode)

    register_tool = tool

    def declare_tool(self, name: str, parameters_schema: Mapping[str, Any], *, description: str = "",
                     strict: bool | None = None, value_from_args: Callable[[dict[str, Any]], float | None] | None = None,
                     target_from_args: Callable[[dict[str, Any]], str | None] | None = None,
                     decision_mode: str | None = None) -> FunctionTool:  # fmt: skip
        """Offer the model a tool with no Python function.

        Its allowed calls come back in the result's ``tool_calls`` (decided, not run), unless it is
        the ``structured_tool_name`` (arguments returned in ``structured``) or a dispatch tool (an
        ``action_request`` for the dispatcher). ``strict`` defaults to whether the schema allows it.
        """
        if strict is None:
            strict = not strict_schema_problems(dict(parameters_schema))
        return self._add(declared_tool(name, parameters_schema, description=description, strict=strict,
                                       value_from_args=value_from_args, target_from_args=target_from_args),
                         decision_mode)  # fmt: skip

    def _add(self, spec: FunctionTool, decision_mode: str | None = None) -> FunctionTool:
        if spec.name in self._tools:
            raise ValueError(f"a tool named {spec.name!r} is already registered")
        if decision_mode is not None:
            self._modes[spec.name] = _decision_mode(decision_mode)
        if spec.name in self.dispatch_tools and spec.name != self.structured_tool_name:
            spec = self._dispatching(spec, self.dispatch_tools[spec.name])
        self._tools[spec.name] = spec
        return spec

    def _dispatching(self, spec: FunctionTool, target: str) -> FunctionTool:
        """The tool, run by handing an action request to the dispatcher (once the call is allowed)."""
        dispatcher = self.dispatcher
        assert dispatcher is not None

        def dispatch(**args: Any) -> dict[str, Any]:
            request = action_request(spec.name, target, args)
            return {"status": "dispatched", "action_request": request, "response": dispatcher(request)}

        return dataclasses.replace(spec, fn=dispatch, declared=False, _binding=None)

    def list_tools(self) -> list[dict[str, Any]]:
        """The tools exactly as they are sent (flat for Responses, nested for Chat Completions)."""
        return [self.wire.tool(t.responses_spec()) for t in self._tools.values()]

    def _config(self) -> LoopConfig:
        return LoopConfig(tools=dict(self._tools), actor=self.actor, domain=self.domain, fail_mode=self.fail_mode,
                          mode=self.mode, context=self.context, structured_tool=self.structured_tool_name,
                          tool_modes=dict(self._modes))  # fmt: skip

    def _new_state(self, messages: Any, input: Any, model: str | None, instructions: str | None, store: bool | None,
                   max_turns: int | None, create_args: dict[str, Any], stream: bool = False,
                   response_format: ResponseFormat | None = None) -> RunState:  # fmt: skip
        model = model or self.model
        if not model:
            raise ValueError("name the model: run(..., model=...), GuardedOpenAI(model=...), or an Azure deployment")
        request: dict[str, Any] = {**self.extra_create_args, **create_args, "model": model}
        # store: run(store=...) wins, then extra_create_args={"store": True} (the documented
        # override), else False: OpenAI keeps nothing and we carry the transcript ourselves.
        if store is not None:
            request["store"] = store
        store = bool(request.get("store", False))
        request["store"] = store
        if self.api == "chat":
            store = False  # Chat Completions never chains: the transcript always travels (``store`` is only OpenAI's flag)
        if instructions is not None:
            request["instructions"] = instructions
        if self._tools:
            # Hosted tools the caller asks for (say {"type": "web_search"}) ride along with ours;
            # their calls are the provider's to run, so nothing here decides or runs them.
            hosted = [t for t in request.get("tools") or [] if isinstance(t, Mapping) and t.get("type") != "function"]
            request["tools"] = [t.responses_spec() for t in self._tools.values()] + hosted  # the wire translates
        if not store and self.api == "responses":
            # Stateless: reasoning must travel with the transcript we carry.
            include = list(request.get("include") or [])
            if "reasoning.encrypted_content" not in include:
                include.append("reasoning.encrypted_content")
            request["include"] = include
        request.pop("stream", None)  # streaming is chosen by run_stream, not by a create argument
        if response_format is not None:
            request["text"] = {**(request.get("text") or {}), "format": text_format(response_format)}
        return new_state(input_items=_messages_to_input(messages, input), request=request, store=store,
                         max_turns=max_turns or self.max_turns, stream=stream)  # fmt: skip

    def _check_action(self, name: str, arguments: Mapping[str, Any]) -> Action:
        tool = self._tools.get(name)
        if tool is None:
            raise ClearanceError(f"no tool named {name!r} is registered")
        args = tool.parse_arguments(dict(arguments))
        return Action(tool=name, arguments=args, actor=self.actor, domain=self.domain, value=tool.value(args),
                      target=tool.target(args), context=dict(self.context))  # fmt: skip

    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_decision is None:
            return
        try:
            result = self.on_decision(event)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:  # noqa: BLE001 - an audit hook must never break a run
            log.exception("on_decision hook raised; the run goes on")

    def _emit_effect(self, effect: fx.Emit) -> None:
        self._emit(effect.event)

    @staticmethod
    def _log_refused(reports: list[tuple[str, str, Any, str | None]], results: Any) -> None:
        """A report the engine refused (say, recorded already with another status) is logged; the
        engine raising (unreachable after its retries) fails the run instead."""
        for (request_id, *_), result in zip(reports, results or []):
            if isinstance(result, Exception):
                log.warning("recording execution of %s was refused: %s", request_id, result)

    def _handler(self, effect: Any) -> Callable[[Any], Any]:
        name = _HANDLERS.get(type(effect))
        if name is None:
            raise TypeError(f"unknown effect {effect!r}")
        return getattr(self, name)  # type: ignore[no-any-return]

    def _check_resumable(self, approval: Approval) -> None:
        """Refuse to resume before the run is taken (taking it is once only) when resuming cannot succeed."""
        if approval.status is ApprovalStatus.pending:
            raise ApprovalNotPending(f"approval {approval.approval_id} is still pending")
        if approval.status is ApprovalStatus.approved and approval.tool not in self._tools:
            raise ClearanceError(f"approval {approval.approval_id} is for tool {approval.tool!r}, which this guard has "
                                 "not registered; register it and resume again (the run is still waiting)")  # fmt: skip

    def _result(self, result: dict[str, Any], response_format: ResponseFormat | None) -> dict[str, Any]:
        """The loop's result plus what the guard adds: dispatched action requests, typed output."""
        dispatched = [e["output"]["action_request"] for e in result["execution"]["events"]
                      if e["status"] == "executed" and e["tool"] in self.dispatch_tools
                      and isinstance(e.get("output"), dict) and "action_request" in e["output"]]  # fmt: skip
        result["action_requests"] = dispatched
        result["action_request"] = dispatched[0] if dispatched else None
        return typed(result, response_format)

    @staticmethod
    def _not_an_approval(approval: Approval | None, retry_id: str) -> None:
        # Taking a run is once only: an approval id must never be spent on a retry.
        if approval is not None:
            raise ClearanceError(f"{retry_id} is an approval id; use resume_after_approval for it")

    @staticmethod
    def _retry_state(saved: dict[str, Any], stream: bool) -> RunState:
        state = RunState.from_dict(saved)
        state.stream = stream
        return state

    def _answer(self, approval_id: str, answer: Mapping[str, Any], by: str = "on_approval_required") -> dict[str, Any]:
        """``on_approval_required``'s answer as the approval loop records it (rejected when it says nothing)."""
        approver = str(answer.get("approver") or self.approver or by)
        return {"approval_id": approval_id, "resolution": answer.get("resolution", "rejected"),
                "comment": answer.get("comment"), "approver": approver}  # fmt: skip

    def _resume_answer(self, approval_id: str, resolution: str | None, comment: str | None,
                       approver: str | None) -> dict[str, Any] | None:  # fmt: skip
        """What ``resume_after_approval(..., resolution=...)`` records before resuming; None without one."""
        if resolution is None:
            if comment is not None or approver is not None:
                raise ValueError("comment= and approver= go with resolution= ('approved' or 'rejected')")
            return None
        if resolution not in ("approved", "rejected"):
            raise ValueError(f"resolution must be 'approved' or 'rejected', not {resolution!r}")
        return self._answer(approval_id, {"resolution": resolution, "comment": comment, "approver": approver},
                            by="resume_after_approval")  # fmt: skip

    @staticmethod
    def _approval_ctx(result: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
        return {**pending, "run_id": result["run_id"], "trace_id": result["trace_id"]}


class GuardedOpenAI(_GuardBase):
    """Governed tool calls over the Responses API (or Chat Completions with ``api="chat"``), blocking."""

    def __init__(self, openai_api_key: str | None = None, **kw: Any) -> None:
        super().__init__(openai_api_key, **kw)
        if self.engine is None:
            self.engine = Engine()

    # -- public API -------------------------------------------------------------------------
    def run(self, messages: Iterable[Mapping[str, Any]] | None = None, *, model: str | None = None, input: Any = None,
            instructions: str | None = None, store: bool | None = None, max_turns: int | None = None,
            response_format: ResponseFormat | None = None, **create_args: Any) -> dict[str, Any]:  # fmt: skip
        """Run the model with governed tools until it answers, a call waits for approval, or turns run out.

        ``response_format`` (a pydantic model or a JSON schema) asks for structured output; the
        answer comes back parsed in ``structured``, or raises ``StructuredOutputError``.
        """
        state = self._new_state(messages, input, model, instructions, store, max_turns, create_args,
                                response_format=response_format)  # fmt: skip
        return self._drive(run_steps(state, self._config()), response_format)

    def resume_after_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | None = None,
                              comment: str | None = None, approver: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Continue a run saved while ``approval_id`` was pending; works from any process.

        With ``resolution`` the approval is first resolved here (as ``approver``, default the
        guard's ``approver``, with ``comment``), as bighub-openai's helper does; without one it
        must have been resolved already (CLI, dashboard, ``engine.resolve_approval``).
        """
        self._resolve_first(approval_id, resolution, comment, approver)
        self._check_resumable(self.engine.get_approval(approval_id))
        state = RunState.from_dict(self.engine.take_run(approval_id))
        state.stream = False
        try:
            return self._drive(resume_steps(state, self._config(), approval_id))
        finally:
            self.engine.release_run(state.run_id)  # if the run was saved again this is a no-op

    def run_stream(self, messages: Iterable[Mapping[str, Any]] | None = None, *, model: str | None = None, input: Any = None,
                   instructions: str | None = None, store: bool | None = None, max_turns: int | None = None,
                   response_format: ResponseFormat | None = None, **create_args: Any) -> Iterator[dict[str, Any]]:  # fmt: skip
        """``run`` as a stream of events: model text and each decision as they happen, then
        ``final_response`` (the payload ``run`` returns). Tools run only once their call is complete."""
        state = self._new_state(messages, input, model, instructions, store, max_turns, create_args, stream=True,
                                response_format=response_format)  # fmt: skip
        yield from self._drive_stream(run_steps(state, self._config()), response_format)

    def resume_after_approval_stream(self, approval_id: str, resolution: Literal["approved", "rejected"] | None = None,
                                     comment: str | None = None,
                                     approver: str | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
        """The streaming twin of ``resume_after_approval``."""
        self._resolve_first(approval_id, resolution, comment, approver)
        self._check_resumable(self.engine.get_approval(approval_id))
        state = RunState.from_dict(self.engine.take_run(approval_id))
        state.stream = True
        try:
            yield from self._drive_stream(resume_steps(state, self._config(), approval_id))
        finally:
            self.engine.release_run(state.run_id)

    def retry_run(self, retry_id: str) -> dict[str, Any]:
        """Ask the model again for a run whose turn failed (the ``retry_id`` its result carries).

        Nothing of the failed turn was kept and no tool ran from it, so the run picks up exactly
        where it stood; a retry id works once, from any process.
        """
        self._not_an_approval(self._find_approval(retry_id), retry_id)
        with _retry_errors(retry_id):
            state = self._retry_state(self.engine.take_run(retry_id), stream=False)
        try:
            return self._drive(run_steps(state, self._config()))
        finally:
            self.engine.release_run(state.run_id)

    def retry_run_stream(self, retry_id: str) -> Iterator[dict[str, Any]]:
        """The streaming twin of ``retry_run``."""
        self._not_an_approval(self._find_approval(retry_id), retry_id)
        with _retry_errors(retry_id):
            state = self._retry_state(self.engine.take_run(retry_id), stream=True)
        try:
            yield from self._drive_stream(run_steps(state, self._config()))
        finally:
            self.engine.release_run(state.run_id)

    def _find_approval(self, approval_id: str) -> Approval | None:
        try:
            return self.engine.get_approval(approval_id)  # type: ignore[no-any-return]
        except NotFound:
            return None

    def run_with_approval(self, messages: Iterable[Mapping[str, Any]] | None = None, *, model: str | None = None,
                          on_approval_required: Callable[[dict[str, Any]], Mapping[str, Any]],
                          max_approval_rounds: int = 20, **kw: Any) -> dict[str, Any]:  # fmt: skip
        """Run; for each pending approval ask ``on_approval_required(ctx)``, record its answer, resume."""
        result = self.run(messages, model=model, **kw)
        loop: list[dict[str, Any]] = []
        for _ in range(max_approval_rounds):
            if result["status"] != "approval_required":
                break
            pending = result["pending_approvals"][0]
            answer = on_approval_required(self._approval_ctx(result, pending))
            loop.append(self._resolve(pending["approval_id"], answer))
            result = self.resume_after_approval(pending["approval_id"])
        result["approval_loop"] = loop
        return result

    def _resolve_first(self, approval_id: str, resolution: str | None, comment: str | None, approver: str | None) -> None:
        entry = self._resume_answer(approval_id, resolution, comment, approver)
        if entry is not None:
            self.engine.resolve_approval(approval_id, entry["resolution"], approver=entry["approver"], comment=entry["comment"])

    def _resolve(self, approval_id: str, answer: Mapping[str, Any]) -> dict[str, Any]:
        entry = self._answer(approval_id, answer)
        self.engine.resolve_approval(approval_id, entry["resolution"], approver=entry["approver"], comment=entry["comment"])
        return entry

    def check_tool(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Silent mode: the decision for a call, recorded, without running anything."""
        action = self._check_action(name, arguments)
        with telemetry.evaluate_span(action) as span:
            decision = self.engine.evaluate(action)
            span.decision(decision)
        self.engine.record_execution(decision.request_id, "not_run")  # a check holds no rate-limit slot
        return _decision_view(decision)

    def close(self) -> None:
        """Nothing is left running after a run returns; kept so ``with GuardedOpenAI(...)`` reads well."""

    def __enter__(self) -> GuardedOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the driver -------------------------------------------------------------------------
    def _drive(self, steps: Steps, response_format: ResponseFormat | None = None) -> dict[str, Any]:
        value: Any = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                return self._result(stop.value, response_format)
            value = self._handler(effect)(effect)

    def _drive_stream(self, steps: Steps, response_format: ResponseFormat | None = None) -> Iterator[dict[str, Any]]:
        value: Any = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                yield {"type": "final_response", "response": self._result(stop.value, response_format)}
                return
            if isinstance(effect, fx.CallModel) and effect.stream:
                value = yield from self._stream_model(effect)
            elif isinstance(effect, fx.Emit):
                self._emit(effect.event)
                yield {"type": "execution_event", "event": effect.event}
                value = None
            else:
                value = self._handler(effect)(effect)

    def _stream_model(self, effect: fx.CallModel) -> Iterator[dict[str, Any]]:
        """Stream one turn to the caller; return the completed (or failed) response to the loop."""
        stream = self._open_stream(effect.request)
        assembler = self.wire.assembler()
        try:
            for raw in stream:
                yield from assembler.feed(raw)
        except Exception as exc:  # noqa: BLE001 - a broken stream is never retried: its turn fails
            yield assembler.fail(exc)
        finally:
            getattr(stream, "close", lambda: None)()
        final, trailing = assembler.finish()
        yield from trailing
        return final

    def _open_stream(self, request: dict[str, Any]) -> Any:
        # Opening is retried like any request (nothing has reached the caller yet).
        for attempt in self.resilience.retrying():
            with attempt, self.breaker.guarding():
                return self.wire.send(self.client, request)
        raise AssertionError("unreachable")  # pragma: no cover

    def _decide(self, effect: fx.Decide) -> Any:
        try:
            with telemetry.evaluate_span(effect.action) as span:
                decision = self.engine.evaluate(effect.action)
                span.decision(decision)
            return decision
        except Exception as exc:  # noqa: BLE001 - the loop applies fail_mode
            return exc

    def _run_tools(self, effect: fx.RunTools) -> list[fx.ToolResult]:
        return [self._run_tool(r) for r in effect.runs]

    def _claim(self, effect: fx.Claim) -> Any:
        try:
            return self.engine.claim_execution(effect.request_id, claimant="clearance-openai", arguments=effect.arguments)
        except ClearanceError as exc:
            return exc

    def _get_approval(self, effect: fx.GetApproval) -> Any:
        return self.engine.get_approval(effect.approval_id)

    def _save_run(self, effect: fx.SaveRun) -> None:
        self.engine.save_run(effect.run_id, effect.state, effect.approval_ids)

    def _call_model(self, effect: fx.CallModel) -> dict[str, Any]:
        request = effect.request
        for attempt in self.resilience.retrying():
            with attempt, self.breaker.guarding():
                return self.wire.response(self.wire.send(self.client, request))
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_tool(self, run: fx.ToolRun) -> fx.ToolResult:
        with telemetry.tool_call_span(run.tool, request_id=run.request_id, call_id=run.call_id) as span, \
                dispatching(run.request_id):
            try:
                tool = self._tools[run.tool]
                output = tool.invoke(run.arguments)
                if inspect.isawaitable(output):
                    output = asyncio.run(output)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - the model hears about the failure; the run goes on
                span.tool_result("failed", exc)
                return fx.ToolResult(error=f"{type(exc).__name__}: {exc}")
            span.tool_result("executed")
            return fx.ToolResult(output=output)

    def _record(self, effect: fx.Record) -> None:
        self._log_refused(effect.reports, self.engine.record_executions(effect.reports))

    def _refuse(self, effect: fx.Refuse) -> None:
        self.engine.refuse_proposal(effect.tool, effect.reason, actor=self.actor, domain=self.domain, trace_id=effect.trace_id)


class AsyncGuardedOpenAI(_GuardBase):
    """The same guard for asyncio: allowed tools of one turn run concurrently."""

    def __init__(self, openai_api_key: str | None = None, **kw: Any) -> None:
        super().__init__(openai_api_key, **kw)
        if self.engine is None:
            self.engine = AsyncEngine(Engine())
        elif isinstance(self.engine, Engine):
            self.engine = AsyncEngine(self.engine)

    _is_async = True

    async def run(self, messages: Iterable[Mapping[str, Any]] | None = None, *, model: str | None = None, input: Any = None,
                  instructions: str | None = None, store: bool | None = None, max_turns: int | None = None,
                  response_format: ResponseFormat | None = None, **create_args: Any) -> dict[str, Any]:  # fmt: skip
        state = self._new_state(messages, input, model, instructions, store, max_turns, create_args,
                                response_format=response_format)  # fmt: skip
        return await self._drive(run_steps(state, self._config()), response_format)

    async def resume_after_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | None = None,
                                    comment: str | None = None, approver: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Continue a run saved while ``approval_id`` was pending (see ``GuardedOpenAI.resume_after_approval``)."""
        await self._resolve_first(approval_id, resolution, comment, approver)
        self._check_resumable(await self.engine.get_approval(approval_id))
        state = RunState.from_dict(await self.engine.take_run(approval_id))
        state.stream = False
        try:
            return await self._drive(resume_steps(state, self._config(), approval_id))
        finally:
            await self.engine.release_run(state.run_id)  # if the run was saved again this is a no-op

    async def run_stream(self, messages: Iterable[Mapping[str, Any]] | None = None, *, model: str | None = None, input: Any = None,
                         instructions: str | None = None, store: bool | None = None, max_turns: int | None = None,
                         response_format: ResponseFormat | None = None, **create_args: Any) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """``run`` as a stream of events (``async for event in guard.run_stream(...)``)."""
        state = self._new_state(messages, input, model, instructions, store, max_turns, create_args, stream=True,
                                response_format=response_format)  # fmt: skip
        async for event in self._drive_stream(run_steps(state, self._config()), response_format):
            yield event

    async def resume_after_approval_stream(self, approval_id: str, resolution: Literal["approved", "rejected"] | None = None,
                                           comment: str | None = None,
                                           approver: str | None = None) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        await self._resolve_first(approval_id, resolution, comment, approver)
        self._check_resumable(await self.engine.get_approval(approval_id))
        state = RunState.from_dict(await self.engine.take_run(approval_id))
        state.stream = True
        try:
            async for event in self._drive_stream(resume_steps(state, self._config(), approval_id)):
                yield event
        finally:
            await self.engine.release_run(state.run_id)

    async def retry_run(self, retry_id: str) -> dict[str, Any]:
        """Ask the model again for a run whose turn failed (see ``GuardedOpenAI.retry_run``)."""
        self._not_an_approval(await self._find_approval(retry_id), retry_id)
        with _retry_errors(retry_id):
            state = self._retry_state(await self.engine.take_run(retry_id), stream=False)
        try:
            return await self._drive(run_steps(state, self._config()))
        finally:
            await self.engine.release_run(state.run_id)

    async def retry_run_stream(self, retry_id: str) -> AsyncIterator[dict[str, Any]]:
        """The streaming twin of ``retry_run``."""
        self._not_an_approval(await self._find_approval(retry_id), retry_id)
        with _retry_errors(retry_id):
            state = self._retry_state(await self.engine.take_run(retry_id), stream=True)
        try:
            async for event in self._drive_stream(run_steps(state, self._config())):
                yield event
        finally:
            await self.engine.release_run(state.run_id)

    async def _find_approval(self, approval_id: str) -> Approval | None:
        try:
            return await self.engine.get_approval(approval_id)  # type: ignore[no-any-return]
        except NotFound:
            return None

    async def run_with_approval(self, messages: Iterable[Mapping[str, Any]] | None = None, *, model: str | None = None,
                                on_approval_required: Callable[[dict[str, Any]], Any],
                                max_approval_rounds: int = 20, **kw: Any) -> dict[str, Any]:  # fmt: skip
        result = await self.run(messages, model=model, **kw)
        loop: list[dict[str, Any]] = []
        for _ in range(max_approval_rounds):
            if result["status"] != "approval_required":
                break
            pending = result["pending_approvals"][0]
            answer = on_approval_required(self._approval_ctx(result, pending))
            if inspect.isawaitable(answer):
                answer = await answer
            entry = self._answer(pending["approval_id"], answer)
            await self.engine.resolve_approval(entry["approval_id"], entry["resolution"], approver=entry["approver"],
                                               comment=entry["comment"])  # fmt: skip
            loop.append(entry)
            result = await self.resume_after_approval(pending["approval_id"])
        result["approval_loop"] = loop
        return result

    async def _resolve_first(self, approval_id: str, resolution: str | None, comment: str | None,
                             approver: str | None) -> None:  # fmt: skip
        entry = self._resume_answer(approval_id, resolution, comment, approver)
        if entry is not None:
            await self.engine.resolve_approval(approval_id, entry["resolution"], approver=entry["approver"],
                                               comment=entry["comment"])  # fmt: skip

    async def check_tool(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        action = self._check_action(name, arguments)
        with telemetry.evaluate_span(action) as span:
            decision = await self.engine.evaluate(action)
            span.decision(decision)
        await self.engine.record_execution(decision.request_id, "not_run")
        return _decision_view(decision)

    async def _drive(self, steps: Steps, response_format: ResponseFormat | None = None) -> dict[str, Any]:
        value: Any = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                return self._result(stop.value, response_format)
            value = await self._handler(effect)(effect)

    async def _drive_stream(self, steps: Steps, response_format: ResponseFormat | None = None) -> AsyncIterator[dict[str, Any]]:
        value: Any = None
        while True:
            try:
                effect = steps.send(value)
            except StopIteration as stop:
                yield {"type": "final_response", "response": self._result(stop.value, response_format)}
                return
            if isinstance(effect, fx.CallModel) and effect.stream:
                assembler = self.wire.assembler()
                stream = await self._open_stream(effect.request)
                try:
                    async for raw in stream:
                        for out in assembler.feed(raw):
                            yield out
                except Exception as exc:  # noqa: BLE001 - a broken stream is never retried
                    yield assembler.fail(exc)
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        await close()
                value, trailing = assembler.finish()
                for out in trailing:
                    yield out
            elif isinstance(effect, fx.Emit):
                self._emit(effect.event)
                yield {"type": "execution_event", "event": effect.event}
                value = None
            else:
                value = await self._handler(effect)(effect)

    async def _open_stream(self, request: dict[str, Any]) -> Any:
        async for attempt in self.resilience.async_retrying():
            with attempt, self.breaker.guarding():
                return await self.wire.send(self.client, request)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _decide(self, effect: fx.Decide) -> Any:
        try:
            with telemetry.evaluate_span(effect.action) as span:
                decision = await self.engine.evaluate(effect.action)
                span.decision(decision)
            return decision
        except Exception as exc:  # noqa: BLE001 - the loop applies fail_mode
            return exc

    async def _run_tools(self, effect: fx.RunTools) -> list[fx.ToolResult]:
        return list(await asyncio.gather(*(self._run_tool(r) for r in effect.runs)))

    async def _claim(self, effect: fx.Claim) -> Any:
        try:
            return await self.engine.claim_execution(effect.request_id, claimant="clearance-openai", arguments=effect.arguments)
        except ClearanceError as exc:
            return exc

    async def _get_approval(self, effect: fx.GetApproval) -> Any:
        return await self.engine.get_approval(effect.approval_id)

    async def _save_run(self, effect: fx.SaveRun) -> None:
        await self.engine.save_run(effect.run_id, effect.state, effect.approval_ids)

    async def _emit_effect(self, effect: fx.Emit) -> None:  # type: ignore[override]
        self._emit(effect.event)

    async def _call_model(self, effect: fx.CallModel) -> dict[str, Any]:
        request = effect.request
        async for attempt in self.resilience.async_retrying():
            with attempt, self.breaker.guarding():
                return self.wire.response(await self.wire.send(self.client, request))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_tool(self, run: fx.ToolRun) -> fx.ToolResult:
        # Each call runs in its own task (gather), which copies the context: the span is this
        # call's alone, a child of the caller's span, and the parent of whatever the tool traces.
        with telemetry.tool_call_span(run.tool, request_id=run.request_id, call_id=run.call_id) as span, \
                dispatching(run.request_id):
            try:
                tool = self._tools[run.tool]
                if tool.is_async:
                    output = await tool.invoke(run.arguments)
                else:
                    output = await asyncio.to_thread(tool.invoke, run.arguments)
            except Exception as exc:  # noqa: BLE001 - the model hears about the failure; the run goes on
                span.tool_result("failed", exc)
                return fx.ToolResult(error=f"{type(exc).__name__}: {exc}")
            span.tool_result("executed")
            return fx.ToolResult(output=output)

    async def _record(self, effect: fx.Record) -> None:  # type: ignore[override]
        self._log_refused(effect.reports, await self.engine.record_executions(effect.reports))

    async def _refuse(self, effect: fx.Refuse) -> None:  # type: ignore[override]
        await self.engine.refuse_proposal(effect.tool, effect.reason, actor=self.actor, domain=self.domain,
                                          trace_id=effect.trace_id)  # fmt: skip
