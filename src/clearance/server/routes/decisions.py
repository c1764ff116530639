"""Decisions, executions and outcomes: what agents call on every tool call."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from clearance.engine import Engine
from clearance.engine.batch import NotDurable
from clearance.errors import ClearanceError
from clearance.model import Action, Decision, DecisionResult, Execution, Outcome
from clearance.server import schemas as S
from clearance.server.auth import Keys, Principal, require
from clearance.server.deps import check_actor, engine_of
from clearance.server.auth import bearer_token, identify, refuse
from clearance.server.idempotency import idempotency_key, request_fingerprint
from clearance.server.errors import (
    STORE_UNAVAILABLE,
    STORE_UNAVAILABLE_MESSAGE,
    ApiError,
    ErrorBody,
    ErrorEnvelope,
    error_type,
    validation_message,
)
from clearance.telemetry import evaluate_span

router = APIRouter(tags=["decisions"])
log = logging.getLogger("clearance.server")

Agent = Annotated[Principal, Depends(require("agent"))]
Reader = Annotated[Principal, Depends(require("agent", "approver"))]
RequestId = Annotated[str, Path(min_length=1, max_length=64, description="The decision's request id.")]


def _bound(principal: Principal, action: Action) -> Action | None:
    """The action as this key may send it (an agent key's identity fills in a missing actor),
    or None when an agent key names another actor. The action is the request's own, just
    parsed, so a missing actor is filled in place: a copy cost more than parsing it."""
    if principal.role != "agent":
        return action
    if "actor" not in action.model_fields_set:
        action.actor = principal.identity
        return action
    return action if action.actor == principal.identity else None


def _bind_actor(request: Request, principal: Principal, action: Action) -> Action:
    bound = _bound(principal, action)
    if bound is None:
        check_actor(request, principal, action.actor, "calls")  # refuses, audited
    return bound  # type: ignore[return-value]


def _own_decision(request: Request, principal: Principal, request_id: str) -> Decision | None:
    if principal.role != "agent":
        return None
    decision = engine_of(request).get_decision(request_id)
    check_actor(request, principal, decision.actor, f"decision {request_id}")
    return decision


def _error_body(exc: ClearanceError) -> ErrorBody:
    status, name = error_type(exc)
    return ErrorBody(type=name, message=str(exc), status=status)


def _decide(request: Request, action: Action) -> Decision:
    started = time.perf_counter()
    with evaluate_span(action, server=True, headers=request.headers) as span:  # a shared no-op unless tracing is on
        decision = engine_of(request).evaluate(action)
        span.decision(decision)
    metrics = request.app.state.metrics
    if metrics is not None:
        metrics.observe_decision(decision, time.perf_counter() - started)
    return decision


@router.post("/decisions", response_model=Decision, summary="Decide one tool call (durable before it returns)",
             responses={409: {"model": ErrorEnvelope, "description": "An Idempotency-Key still in use"}})  # fmt: skip
def evaluate(action: Action, principal: Agent) -> Decision:
    """Declared for the OpenAPI document; :class:`DecisionEndpoint` answers every such request
    before the framework routes it (see ``create_app``)."""
    raise RuntimeError("POST /v1/decisions is answered by DecisionEndpoint")


@router.post("/proposals/refused", response_model=S.Audited, summary="Audit a proposed call the guard refused before any decision")
def refuse_proposal(body: S.RefusedProposal, request: Request, principal: Agent) -> S.Audited:
    actor = body.actor or (principal.identity if principal.role == "agent" else "anonymous")
    check_actor(request, principal, actor, "proposals")
    engine_of(request).refuse_proposal(body.tool, body.reason, actor=actor, domain=body.domain, trace_id=body.trace_id)
    return S.Audited()


@router.post("/decisions/batch", response_model=S.EvaluateBatchResponse, summary="Decide several tool calls, in order")
def evaluate_batch(body: S.EvaluateBatchRequest, request: Request, principal: Agent) -> S.EvaluateBatchResponse:
    actions = [_bind_actor(request, principal, a) for a in body.actions]
    return S.EvaluateBatchResponse(decisions=[_decide(request, a) for a in actions])


Text = Annotated[Optional[str], Query(min_length=1, max_length=256)]


@router.get("/decisions", response_model=list[Decision], summary="Decisions newest first, filtered")
def list_decisions(
    request: Request,
    principal: Annotated[Principal, Depends(require("approver"))],
    result: Annotated[Optional[DecisionResult], Query()] = None,
    tool: Text = None,
    actor: Text = None,
    domain: Text = None,
    rule: Annotated[Optional[str], Query(min_length=1, max_length=128, description="Among matched or shadow rules.")] = None,
    since: Annotated[Optional[datetime], Query(description="decided_at >= since")] = None,
    until: Annotated[Optional[datetime], Query(description="decided_at < until")] = None,
    before: Annotated[Optional[str], Query(min_length=1, max_length=64, description="The last request id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Decision]:
    return engine_of(request).list_decisions(result=result, tool=tool, actor=actor, domain=domain, rule=rule, since=since,
                                             until=until, before=before, limit=limit)  # fmt: skip


@router.get("/decisions/{request_id}", response_model=Decision, summary="A recorded decision")
def get_decision(request_id: RequestId, request: Request, principal: Reader) -> Decision:
    return _own_decision(request, principal, request_id) or engine_of(request).get_decision(request_id)


@router.get("/decisions/{request_id}/action", response_model=Action, summary="The action as it was decided")
def get_action(request_id: RequestId, request: Request, principal: Reader) -> Action:
    _own_decision(request, principal, request_id)
    return engine_of(request).get_action(request_id)


@router.get("/decisions/{request_id}/precedents", response_model=S.PrecedentsResponse,
            summary="The similar past cases a decision rests on")  # fmt: skip
def precedents(request_id: RequestId, request: Request, principal: Reader) -> S.PrecedentsResponse:
    d = _own_decision(request, principal, request_id) or engine_of(request).get_decision(request_id)
    return S.PrecedentsResponse(request_id=d.request_id, risk_score=d.risk_score, evidence=d.evidence, risk_summary=d.risk_summary,
                                precedents=[p.model_dump(mode="json") for p in d.precedents])  # fmt: skip


@router.post("/decisions/{request_id}/claim", response_model=Execution,
             summary="Take the one right to run an allowed or approved call")  # fmt: skip
def claim(request_id: RequestId, body: S.ClaimRequest, request: Request, principal: Agent) -> Execution:
    _own_decision(request, principal, request_id)
    return engine_of(request).claim_execution(request_id, claimant=body.claimant, arguments=body.arguments)


@router.post("/decisions/{request_id}/execution", response_model=Execution, summary="Record what happened to the call")
def record_execution(request_id: RequestId, body: S.RecordExecutionRequest, request: Request, principal: Agent) -> Execution:
    _own_decision(request, principal, request_id)
    return engine_of(request).record_execution(request_id, body.status, body.result_summary, body.error)


@router.get("/decisions/{request_id}/execution", response_model=Optional[Execution],
            summary="The recorded execution, or null before any")  # fmt: skip
def get_execution(request_id: RequestId, request: Request, principal: Reader) -> Execution | None:
    _own_decision(request, principal, request_id)
    return engine_of(request).get_execution(request_id)


@router.post("/executions/batch", response_model=S.RecordExecutionsResponse,
             summary="Record several executions in one transaction; each report succeeds or fails alone")  # fmt: skip
def record_executions(body: S.RecordExecutionsRequest, request: Request, principal: Agent) -> S.RecordExecutionsResponse:
    engine = engine_of(request)
    results: list[S.ExecutionResult | None] = [None] * len(body.reports)
    todo, index = [], []
    for i, r in enumerate(body.reports):
        try:
            _own_decision(request, principal, r.request_id)
        except ClearanceError as exc:
            results[i] = S.ExecutionResult(ok=False, error=_error_body(exc))
            continue
        todo.append((r.request_id, r.status, r.result_summary, r.error))
        index.append(i)
    for i, res in zip(index, engine.record_executions(todo) if todo else []):
        results[i] = (S.ExecutionResult(ok=False, error=_error_body(res)) if isinstance(res, ClearanceError)
                      else S.ExecutionResult(ok=True, execution=res))  # fmt: skip
    return S.RecordExecutionsResponse(results=[r for r in results if r is not None])


def _report(request: Request, principal: Principal, request_id: str, body: S.ReportOutcomeRequest) -> Outcome:
    outcome = engine_of(request).report_outcome(
        request_id, body.status, severity=body.severity, cost=body.cost, description=body.description,
        observed_at=body.observed_at, reported_by=body.reported_by or principal.identity, event_id=body.event_id,
    )  # fmt: skip
    if request.app.state.metrics is not None:
        request.app.state.metrics.observe_outcome(outcome)
    return outcome


@router.post("/decisions/{request_id}/outcomes", response_model=Outcome,
             summary="Link a real-world outcome to a decision (idempotent on event_id)")  # fmt: skip
def report_outcome(request_id: RequestId, body: S.ReportOutcomeRequest, request: Request, principal: Agent) -> Outcome:
    return _report(request, principal, request_id, body)


@router.get("/decisions/{request_id}/outcomes", response_model=list[Outcome], summary="The outcomes of a decision")
def outcomes(request_id: RequestId, request: Request, principal: Reader) -> list[Outcome]:
    _own_decision(request, principal, request_id)
    return engine_of(request).outcomes(request_id)


@router.post("/outcomes/batch", response_model=S.ReportOutcomesResponse,
             summary="Report several outcomes; each succeeds or fails alone")  # fmt: skip
def report_outcomes(body: S.ReportOutcomesRequest, request: Request, principal: Agent) -> S.ReportOutcomesResponse:
    results = []
    for r in body.outcomes:
        try:
            results.append(S.OutcomeResult(ok=True, outcome=_report(request, principal, r.request_id, r)))
        except ClearanceError as exc:
            results.append(S.OutcomeResult(ok=False, error=_error_body(exc)))
    return S.ReportOutcomesResponse(results=results)


# -- POST /v1/decisions: one implementation, in front of the framework ---------------------------
class DecisionEndpoint:
    """``POST /v1/decisions``, answered in full by :class:`RequestContext` before FastAPI's
    routing, dependency injection and thread hop, with group commit. It is the only code that
    answers this path (the route above only declares it for the OpenAPI document).

    Auth, the role check, actor binding and ``Idempotency-Key`` are done here, each once: a
    refusal is audited and answered with the envelope as any route's is. The decision is made
    by a :class:`BatchWriter` together with those of concurrent requests, in one transaction
    and one fsync; the key's answer is looked up and kept in that same transaction, so the key,
    the decision and the answer become durable together, or none of them.
    """

    path = "/v1/decisions"
    route = "/v1/decisions"

    def __init__(self, engine: Engine, keys: Keys, metrics: Any = None, webhooks: Any = None) -> None:
        from clearance.engine.batch import BatchWriter

        self.engine, self.keys, self.metrics = engine, keys, metrics
        self.webhooks = webhooks  # an ApprovalWebhookSender: woken when an approval is requested
        # On a SQLite file, batches are decided on the event loop's thread and the fsync of one
        # overlaps the deciding of the next; each answer still waits for its own fsync. Where a
        # commit is durable when it returns (PostgreSQL), there is no fsync to overlap, and
        # handing each batch to a syncing thread would only add a thread hop to every answer.
        deferred = engine.store.defers_sync
        self.writer = BatchWriter(engine, overlap_sync=deferred, inline=deferred)

    def stop(self) -> None:
        self.writer.stop()

    async def handle(self, scope: Any, headers: dict[bytes, bytes], body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The response: status, headers and body."""
        try:
            principal, action, idem = await self._admit(scope, headers, body)
        except ApiError as exc:
            return _envelope(scope, exc.status, exc.type, exc.message, exc.field,
                             None if exc.retry_after is None else str(exc.retry_after))  # fmt: skip
        except STORE_UNAVAILABLE as exc:  # the key could not be looked up
            log.warning("store unavailable: %s", getattr(exc, "orig", None) or exc)
            return _envelope(scope, 503, "unavailable", STORE_UNAVAILABLE_MESSAGE, retry_after="1")
        scope.setdefault("state", {})["principal"] = principal
        engine = self.engine
        started = time.perf_counter()
        trace_headers = None
        if b"traceparent" in headers:  # W3C trace context: the span joins the caller's trace
            trace_headers = {k.decode(): headers[k].decode("latin-1") for k in (b"traceparent", b"tracestate") if k in headers}
        with evaluate_span(action, server=True, headers=trace_headers) as span:  # a shared no-op unless tracing is on
            try:
                # Decided with the concurrent requests' decisions in one transaction (group commit).
                result = await self.writer.submit(lambda _tx: engine.evaluate_serialised(action, key=idem))
            except NotDurable as exc:  # committed, so it must not be decided again
                return _envelope(scope, 500, "internal_error", str(exc))
            except ClearanceError as exc:
                status, name = error_type(exc)
                return _envelope(scope, status, name, str(exc))
            except STORE_UNAVAILABLE as exc:
                log.warning("store unavailable: %s", getattr(exc, "orig", None) or exc)
                return _envelope(scope, 503, "unavailable", STORE_UNAVAILABLE_MESSAGE, retry_after="1")
            if len(result) == 2:
                span.decision(result[0])
        if len(result) == 4:  # the answer kept under this Idempotency-Key
            fp, state, status, stored = result
            if fp != idem[2]:  # type: ignore[index]
                return _envelope(scope, 422, "idempotency_key_reused", "this Idempotency-Key was used for a different request",
                                 "header.idempotency-key")  # fmt: skip
            if state != "done" or status is None or stored is None:  # reserved by a request that never finished
                return _envelope(scope, 409, "idempotency_in_progress", "a request with this Idempotency-Key has not "
                                 "finished; retry later or use a new key")  # fmt: skip
            payload = stored.encode()
            return status, [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"idempotent-replayed", b"true")], payload  # fmt: skip
        decision, out = result
        if self.metrics is not None:
            self.metrics.observe_decision(decision, time.perf_counter() - started)
        if decision.approval_id is not None and self.webhooks is not None:
            self.webhooks.wake()  # send approval.requested now (it is durable), not at the next poll
        payload = out.encode()
        return 200, [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")], payload

    async def _admit(self, scope: Any, headers: dict[bytes, bytes], body: bytes) -> tuple[Principal, Any, tuple[str, str, str] | None]:
        """Who calls, what they ask for, under which key: or the :class:`ApiError` to answer."""
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        client = scope.get("client")
        principal = identify(scope["app"].state, client[0] if client else None, token)
        if principal is None:
            message = "the API key is not valid or was revoked" if token else "an API key is required: send Authorization: Bearer <key>"
            raise await run_in_threadpool(refuse, Request(scope), 401, message)
        if principal.role not in ("agent", "admin"):
            raise await run_in_threadpool(refuse, Request(scope), 403, f"the {principal.role} role may not POST {self.path} "
                                          "(needs admin or agent)", principal)  # fmt: skip
        raw_key = headers.get(b"idempotency-key")
        idem_key = idempotency_key(raw_key) if raw_key is not None else None
        try:
            action = Action.model_validate_json(body)
        except ValidationError as exc:
            message, field = validation_message(list(exc.errors()))
            raise ApiError(422, "validation_error", message, field if field == "body" else f"body.{field}") from None
        bound = _bound(principal, action)
        if bound is None:
            await run_in_threadpool(_bind_actor, Request(scope), principal, action)  # raises the audited refusal
        return principal, bound, (principal.key_id, idem_key, request_fingerprint(scope, body)) if idem_key is not None else None


def _envelope(scope: Any, status: int, type: str, message: str, field: str | None = None,
              retry_after: str | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:  # fmt: skip
    correlation = scope.get("state", {}).get("correlation_id")
    body = ErrorBody(type=type, message=message, status=status, field=field, correlation_id=correlation)
    payload = json.dumps({"error": body.model_dump()}).encode()
    headers = [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    return status, headers, payload
