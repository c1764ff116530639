"""The gateway's two answers: which tools a client sees, and what happens to each call.

``tools/list`` passes the upstreams' tools through as they are, less the ones the policy blocks
outright for this actor and domain, and pins each definition's digest in the audit chain (a
changed one is reported, and with ``block_changed_tools`` held back until a person accepts
it). ``tools/call`` is decided by the engine before anything reaches an upstream: allowed
calls are forwarded and their execution recorded; blocked ones come back as an error result
with the verdict, reason and request id; a call that needs approval waits for it (progress
notifications meanwhile) and runs exactly once when approved, claimed through the engine. The
same call made again later waits for or runs under that approval (``engine.open_approval``).

Decisions and execution records go through the engine's group commit (:class:`BatchWriter`):
decided on the event loop's thread (no thread hop), the fsync on another, the call forwarded
only once its decision is durable. An execution is recorded just after the result is sent
(:data:`RECORD_DELAY_SECONDS`), off the answer's path, with the executions and decisions that
queued meanwhile: a call has one fsync on its path, not two. A gateway that dies in between
leaves a durable decision without an execution, which reads as "may have run", like a claim
never reported.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import mcp_types as types
from pydantic import ValidationError

from clearance.adapters.mcp.config import SEPARATOR, GatewayConfig
from clearance.adapters.mcp.upstream import Upstream, definition_digest
from clearance.engine import Engine
from clearance.engine.batch import BatchWriter
from clearance.engine.contract import ExecutionReport
from clearance.engine.open_calls import decide_joining
from clearance.engine.tool_pins import ToolPin
from clearance.errors import AlreadyClaimed, ClearanceError
from clearance.model import Action, ApprovalStatus, Decision, DecisionResult, ExecutionStatus
from clearance.policy.outright import blocked_outright

__all__ = ["Gateway", "Progress"]

log = logging.getLogger("clearance.mcp")

#: ``(progress, total, message)``: a progress notification for the call being served.
Progress = Callable[[float, "float | None", "str | None"], Awaitable[None]]

#: Characters of a tool's text result kept in the execution record.
SUMMARY_LIMIT = 2000

#: How long after its answer an execution is committed, unless a decision's commit takes it along
#: sooner: long enough for the answer to be written first, short enough that the commit (and its
#: fsync) is done before a client's next call, and a gateway that dies rarely leaves a call that
#: ran without its record.
RECORD_DELAY_SECONDS = 0.001

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Route:
    """A tool as the client sees it, and where it really is."""

    upstream: Upstream
    tool: types.Tool  # the upstream's own definition (its own name)
    pin: ToolPin


class Gateway:
    """Serves the upstreams' tools under the engine's decisions. Use one per process."""

    def __init__(self, engine: Engine, config: GatewayConfig, upstreams: list[Upstream]) -> None:
        self.engine = engine
        self.config = config
        self.upstreams = upstreams
        self.claimant = f"clearance-mcp:{os.getpid()}"
        self._routes: dict[str, _Route] = {}
        #: Decisions and execution records, committed together in batches (one fsync for all).
        self._writer = BatchWriter(engine, overlap_sync=True, inline=True)
        #: Executions not yet handed to the writer: they go with the next decision, or alone
        #: once :data:`RECORD_DELAY_SECONDS` pass (see :meth:`run_recorder`).
        self.record_delay = RECORD_DELAY_SECONDS
        self._pending: list[ExecutionReport] = []
        self._recording: set[asyncio.Future[Any]] = set()
        self._queued = anyio.Event()
        self._closed = anyio.Event()

    async def run_recorder(self) -> None:
        """Commit the executions no decision took along, until :meth:`close_recorder`; then those
        still queued, and stop the writer. Run it in the serving task group."""
        try:
            while not self._closed.is_set():
                await self._queued.wait()
                self._queued = anyio.Event()
                with anyio.move_on_after(self.record_delay):
                    await self._closed.wait()
                self._hand_over_reports()
        finally:
            with anyio.CancelScope(shield=True):  # cancelled or closed: what ran is still recorded
                self._hand_over_reports()
                for future in list(self._recording):
                    try:
                        await future
                    except Exception:  # noqa: BLE001 - logged by _recorded
                        pass
                await anyio.to_thread.run_sync(self._writer.stop)

    def close_recorder(self) -> None:
        """No more executions: :meth:`run_recorder` records what is queued and returns."""
        self._closed.set()
        self._queued.set()

    def _report(self, report: ExecutionReport) -> None:
        """Queue an execution record (committed with the next decision, or a delay later)."""
        self._pending.append(report)
        if len(self._pending) == 1:
            self._queued.set()

    def _hand_over_reports(self) -> None:
        """Hand the queued executions to the writer: into the batch being formed, if there is one."""
        if not self._pending:
            return
        reports, self._pending = self._pending, []
        future = self._writer.submit(lambda _tx: self.engine.record_executions(reports))
        self._recording.add(future)
        future.add_done_callback(functools.partial(self._recorded, len(reports)))

    def _recorded(self, count: int, future: asyncio.Future[Any]) -> None:
        self._recording.discard(future)
        if future.cancelled():
            return
        failure = future.exception()
        if failure is not None:  # the store is down: say so, keep serving (the decisions stand)
            log.error("%d executions could not be recorded: %s", count, failure)
            return
        for outcome in future.result():
            if isinstance(outcome, Exception):
                log.error("an execution could not be recorded: %s", outcome)

    # -- tools/list -------------------------------------------------------------------------
    async def list_tools(self) -> list[types.Tool]:
        routes: dict[str, _Route] = {}
        for upstream in self.upstreams:
            try:
                tools = await upstream.list_tools()
            except Exception as exc:  # noqa: BLE001 - one upstream down does not take the others' tools away
                if len(self.upstreams) == 1:
                    raise
                log.error("upstream %s did not list its tools (%s: %s); they are left out", upstream.source,
                          type(exc).__name__, exc)  # fmt: skip
                continue
            pins = await _run(self.engine.tool_pins.observe, upstream.source, {t.name: definition_digest(t) for t in tools})
            for tool in tools:
                pin = pins[tool.name]
                if pin.changed:
                    log.warning("the definition of tool %s of %s changed since it was accepted (digest %s, accepted %s)",
                                tool.name, upstream.source, pin.current[:12], pin.accepted[:12])  # fmt: skip
                routes[self._exposed(upstream, tool.name)] = _Route(upstream, tool, pin)
        self._routes = routes
        rules, switches = await _run(self.engine.current_rules), await _run(self.engine.kill_switches)
        shown = []
        for name, route in routes.items():
            if self.config.block_changed_tools and route.pin.changed:
                continue
            if blocked_outright(rules, switches, tool=name, actor=self.config.actor, domain=self._domain(route)) is not None:
                continue
            shown.append(route.tool.model_copy(update={"name": name}) if name != route.tool.name else route.tool)
        return shown

    def _exposed(self, upstream: Upstream, tool: str) -> str:
        return f"{upstream.name}{SEPARATOR}{tool}" if self.config.namespaced and upstream.name else tool

    def _domain(self, route: _Route) -> str:
        return route.upstream.config.domain or self.config.domain

    # -- tools/call -------------------------------------------------------------------------
    async def call_tool(self, name: str, arguments: dict[str, Any] | None, progress: Progress | None = None) -> types.CallToolResult:
        arguments = dict(arguments or {})
        route = self._routes.get(name)
        if route is None:
            await self.list_tools()
            route = self._routes.get(name)
        if route is None:
            return await self._refuse(name, f"no upstream offers a tool named {name!r}")
        if self.config.block_changed_tools and route.pin.changed and await self._still_changed(route):
            return await self._refuse(name, f"the definition of {name} changed since it was accepted; a person must "
                                      f"accept it first (clearance mcp accept {route.tool.name} --source "
                                      f"{route.upstream.source})")  # fmt: skip
        try:
            action = self._action(name, route, arguments)
        except ValueError as exc:
            return await self._refuse(name, str(exc))
        self._hand_over_reports()  # the executions recorded so far share this decision's commit
        try:
            decision = await self._writer.submit(decide_joining(self.engine, action))
        except Exception as exc:  # noqa: BLE001 - fail closed: no decision, no call
            log.exception("the engine could not decide a call of %s", name)
            return _error({"verdict": "blocked", "reason": f"the engine could not decide this call ({type(exc).__name__}: "
                           f"{exc}); it did not run", "request_id": None})  # fmt: skip
        if decision.result is DecisionResult.blocked:
            return _error(_verdict(decision))
        if decision.result is DecisionResult.requires_approval:
            ready = await self._wait_for_approval(decision, progress)
            if ready is not None:
                return ready
        return await self._forward(route, decision, arguments)

    async def _still_changed(self, route: _Route) -> bool:
        """Whether a changed tool is still unaccepted (another process may have accepted it)."""
        pins = {p.tool: p for p in await _run(self.engine.tool_pins.list, route.upstream.source)}
        pin = pins.get(route.tool.name, route.pin)
        if not pin.changed:
            self._routes = {n: (_Route(r.upstream, r.tool, pin) if r is route else r) for n, r in self._routes.items()}
        return pin.changed

    def _action(self, name: str, route: _Route, arguments: dict[str, Any]) -> Action:
        settings = self.config.tools.get(name)
        value = target = None
        if settings is not None and settings.value is not None and arguments.get(settings.value) is not None:
            raw = arguments[settings.value]
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise ValueError(f"argument {settings.value!r} of {name} must be a number (the value at stake)")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"argument {settings.value!r} of {name} must be a number (the value at stake)") from None
        if settings is not None and settings.target is not None and arguments.get(settings.target) is not None:
            target = str(arguments[settings.target])
        try:
            return Action(tool=name, arguments=arguments, actor=self.config.actor, domain=self._domain(route), value=value,
                          target=target, context={"mcp": {"source": route.upstream.source, "tool": route.tool.name}})  # fmt: skip
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None

    async def _wait_for_approval(self, decision: Decision, progress: Progress | None) -> types.CallToolResult | None:
        """Wait for the approval; ``None`` once it is approved, else the result to return."""
        approval_id = decision.approval_id
        assert approval_id is not None
        wait = self.config.approval_wait_seconds
        start = time.monotonic()
        message = f"waiting for approval {approval_id}: {decision.reason}"
        while True:
            elapsed = time.monotonic() - start
            if progress is not None:
                await _quietly(progress(round(elapsed, 1), wait, message))
            left = wait - elapsed
            chunk = max(min(self.config.progress_every_seconds, left), 0.0)
            approval = await _run(self.engine.wait_approval, approval_id, timeout_seconds=chunk)
            if approval.status is ApprovalStatus.approved:
                return None
            if approval.status is not ApprovalStatus.pending:
                by = f" by {approval.resolved_by}" if approval.resolved_by else ""
                self._report((decision.request_id, ExecutionStatus.rejected, None, f"approval {approval.status.value}"))
                return _error({**_verdict(decision), "approval_id": approval_id, "approval_status": approval.status.value,
                               "reason": f"approval {approval_id} was {approval.status.value}{by}; the call did not run"})  # fmt: skip
            if time.monotonic() - start >= wait:
                return _error({**_verdict(decision), "approval_id": approval_id, "approval_status": "pending",
                               "reason": f"approval {approval_id} is still pending after {wait:g} s; the call did not run. "
                                         "Once it is approved, the same call with the same arguments runs it once."})  # fmt: skip

    async def _forward(self, route: _Route, decision: Decision, arguments: dict[str, Any]) -> types.CallToolResult:
        request_id = decision.request_id
        if decision.result is DecisionResult.requires_approval:
            try:
                await _run(self.engine.claim_execution, request_id, claimant=self.claimant, arguments=arguments)
            except AlreadyClaimed:
                return _error({**_verdict(decision), "reason": f"the approved call {request_id} has already run; "
                               "it runs once"})  # fmt: skip
            except ClearanceError as exc:
                return _error({**_verdict(decision), "reason": str(exc)})
        try:
            result = await route.upstream.call_tool(route.tool.name, arguments)
        except Exception as exc:  # noqa: BLE001 - whatever the upstream did, the call is recorded and answered
            error = f"{type(exc).__name__}: {exc}"
            self._report((request_id, ExecutionStatus.failed, None, error))
            return _error({**_verdict(decision), "status": "failed", "reason": f"the upstream failed: {error}"})
        status = ExecutionStatus.failed if result.is_error else ExecutionStatus.executed
        self._report((request_id, status, _summary(result), "the tool returned an error result" if result.is_error else None))
        # The upstream's own stamps (its serverInfo) are not ours to pass on; the gateway stamps its own.
        meta = {k: v for k, v in (result.meta or {}).items() if not k.startswith("io.modelcontextprotocol/")}
        meta["clearance"] = {"verdict": decision.result.value, "request_id": request_id}
        return result.model_copy(update={"meta": meta})

    async def _refuse(self, name: str, reason: str) -> types.CallToolResult:
        """A call refused before any decision: audited as ``proposal.refused``, answered as an error."""
        await _run(self.engine.refuse_proposal, name, reason, actor=self.config.actor, domain=self.config.domain)
        return _error({"verdict": "blocked", "reason": reason, "request_id": None})


async def _run(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """An engine call in a worker thread: a commit waits for the disk, the event loop does not."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def _quietly(notification: Awaitable[None]) -> None:
    try:
        await notification
    except Exception:  # noqa: BLE001 - a client gone or without progress support does not stop the wait
        log.debug("progress notification not sent", exc_info=True)


def _verdict(decision: Decision) -> dict[str, Any]:
    body: dict[str, Any] = {"verdict": decision.result.value, "reason": decision.reason, "request_id": decision.request_id}
    if decision.approval_id is not None:
        body["approval_id"] = decision.approval_id
    return body


def _error(body: dict[str, Any]) -> types.CallToolResult:
    """A refusal as a tool result the model can read (``isError``), and as data for programs."""
    body = {"status": "not_run", **body}
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(body))], structured_content=body,
                                is_error=True, _meta={"clearance": body})  # fmt: skip


def _summary(result: types.CallToolResult) -> Any:
    if result.structured_content is not None:
        text = json.dumps(result.structured_content, default=str)
        if len(text) <= SUMMARY_LIMIT:
            return result.structured_content
        return text[:SUMMARY_LIMIT]
    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    return text[:SUMMARY_LIMIT]
