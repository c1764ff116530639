"""Decisions, executions and outcomes: what agents call on every tool call."""

from __future__ import annotations

import time
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Path, Request, Response

from clearance.errors import ClearanceError
from clearance.model import Action, Decision, Execution, Outcome
from clearance.server import schemas as S
from clearance.server.auth import Principal, require
from clearance.server.deps import check_actor, engine_of
from clearance.server.errors import ErrorBody, error_type

router = APIRouter(tags=["decisions"])

Agent = Annotated[Principal, Depends(require("agent"))]
Reader = Annotated[Principal, Depends(require("agent", "approver"))]
RequestId = Annotated[str, Path(min_length=1, max_length=64, description="The decision's request id.")]


def _bind_actor(request: Request, principal: Principal, action: Action) -> Action:
    if principal.role == "agent" and "actor" not in action.model_fields_set:
        return action.model_copy(update={"actor": principal.identity})
    check_actor(request, principal, action.actor, "calls")
    return action


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
    decision = engine_of(request).evaluate(action)
    metrics = request.app.state.metrics
    if metrics is not None:
        metrics.observe_decision(decision, time.perf_counter() - started)
    return decision


@router.post("/decisions", response_model=Decision, summary="Decide one tool call (durable before it returns)")
def evaluate(action: Action, request: Request, principal: Agent) -> Response:
    # The hot path: the engine's Decision is serialised once, not validated again on the way out.
    decision = _decide(request, _bind_actor(request, principal, action))
    return Response(decision.model_dump_json(), media_type="application/json")


@router.post("/decisions/batch", response_model=S.EvaluateBatchResponse, summary="Decide several tool calls, in order")
def evaluate_batch(body: S.EvaluateBatchRequest, request: Request, principal: Agent) -> S.EvaluateBatchResponse:
    actions = [_bind_actor(request, principal, a) for a in body.actions]
    return S.EvaluateBatchResponse(decisions=[_decide(request, a) for a in actions])


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
