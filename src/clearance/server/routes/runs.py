"""Suspended agent runs: kept by the server while their calls wait for approval."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel

from clearance.server import schemas as S
from clearance.server.auth import Principal, require
from clearance.server.deps import check_actor, engine_of
from clearance.server.errors import ApiError

router = APIRouter(tags=["runs"])

Agent = Annotated[Principal, Depends(require("agent"))]
RunId = Annotated[str, Path(min_length=1, max_length=64)]


class RunSaved(BaseModel):
    run_id: str


class RunReleased(BaseModel):
    run_id: str
    released: bool = True


def _owner(principal: Principal) -> str | None:
    """An agent key's runs are its identity's; an admin acts for anyone."""
    return principal.identity if principal.role == "agent" else None


@router.put("/runs/{run_id}", response_model=RunSaved, summary="Keep a run that waits for approvals")
def save_run(run_id: RunId, body: S.SaveRunRequest, request: Request, principal: Agent) -> RunSaved:
    if not isinstance(body.state.get("trace_id"), str) or not body.state["trace_id"]:
        raise ApiError(422, "validation_error", "a run state carries its trace_id", field="body.state.trace_id")
    engine_of(request).save_run(run_id, body.state, body.approval_ids, owner=_owner(principal))
    return RunSaved(run_id=run_id)


@router.post("/runs/take", response_model=S.RunStateResponse,
             summary="Hand out, once, the saved run that waits for an approval")  # fmt: skip
def take_run(body: S.TakeRunRequest, request: Request, principal: Agent) -> S.RunStateResponse:
    engine = engine_of(request)
    if principal.role == "agent":
        approval = engine.get_approval(body.approval_id)
        check_actor(request, principal, approval.actor, f"the run of approval {body.approval_id}")
    return S.RunStateResponse(state=engine.take_run(body.approval_id, wait_seconds=body.wait_seconds))


@router.post("/runs/{run_id}/release", response_model=RunReleased, summary="Let the next resumer take a run")
def release_run(run_id: RunId, request: Request, principal: Agent) -> RunReleased:
    engine_of(request).release_run(run_id, owner=_owner(principal))
    return RunReleased(run_id=run_id)
