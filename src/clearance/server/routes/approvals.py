"""Approvals: list, read, wait for, resolve."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from clearance.model import Approval, ApprovalStatus
from clearance.server import schemas as S
from clearance.server.auth import Principal, refuse, require
from clearance.server.deps import check_actor, engine_of

router = APIRouter(tags=["approvals"])

ApprovalId = Annotated[str, Path(min_length=1, max_length=64)]
Reader = Annotated[Principal, Depends(require("agent", "approver"))]
Approver = Annotated[Principal, Depends(require("approver"))]
Admin = Annotated[Principal, Depends(require())]

#: How often a waiting request looks at the store (resolutions made through this server wake it at once).
POLL_SECONDS = 0.2


def _waiters(request: Request) -> dict[str, set[asyncio.Event]]:
    return request.app.state.approval_waiters  # type: ignore[no-any-return]


def notify(request: Request, approval_id: str) -> None:
    loop = getattr(request.app.state, "loop", None)
    for event in list(_waiters(request).get(approval_id, ())):
        if loop is not None:
            loop.call_soon_threadsafe(event.set)


@router.get("/approvals", response_model=list[Approval], summary="Approvals by status, oldest first")
def list_approvals(
    request: Request,
    principal: Annotated[Principal, Depends(require("approver"))],
    status: Annotated[Literal["pending", "approved", "rejected", "expired", "all"], Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Approval]:
    return engine_of(request).list_approvals(None if status == "all" else ApprovalStatus(status), limit=limit)


def _get(request: Request, principal: Principal, approval_id: str) -> Approval:
    approval = engine_of(request).get_approval(approval_id)
    check_actor(request, principal, approval.actor, f"approval {approval_id}")
    return approval


@router.get("/approvals/{approval_id}", response_model=Approval, summary="One approval with its votes")
def get_approval(approval_id: ApprovalId, request: Request, principal: Reader) -> Approval:
    return _get(request, principal, approval_id)


@router.get("/approvals/{approval_id}/wait", response_model=Approval,
            summary="Long-poll until the approval is no longer pending, or the timeout passes")  # fmt: skip
async def wait_approval(
    approval_id: ApprovalId,
    request: Request,
    principal: Reader,
    timeout_seconds: Annotated[float, Query(ge=0, le=300, description="Answer with the pending approval after this long.")] = 30.0,
) -> Approval:
    """Answers as soon as the approval is approved, rejected or expired; after ``timeout_seconds``
    it answers with the approval still ``pending`` (status 200 either way)."""
    deadline = time.monotonic() + timeout_seconds
    waiters = _waiters(request)
    event = asyncio.Event()
    waiters.setdefault(approval_id, set()).add(event)
    try:
        while True:
            approval = await run_in_threadpool(_get, request, principal, approval_id)
            left = deadline - time.monotonic()
            if approval.status is not ApprovalStatus.pending or left <= 0:
                return approval
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), timeout=min(POLL_SECONDS, left))
            except asyncio.TimeoutError:
                pass
    finally:
        mine = waiters.get(approval_id)
        if mine is not None:
            mine.discard(event)
            if not mine:
                waiters.pop(approval_id, None)


@router.post("/approvals/{approval_id}/resolve", response_model=Approval,
             summary="Record one approver's answer; of concurrent answers exactly one takes effect")  # fmt: skip
def resolve(approval_id: ApprovalId, body: S.ResolveRequest, request: Request, principal: Approver) -> Approval:
    engine = engine_of(request)
    if principal.is_admin:
        approver = body.approver or principal.identity
    else:
        if body.approver is not None and body.approver != principal.identity:
            raise refuse(request, 403, f"this key answers as {principal.identity!r}, not {body.approver!r}", principal,
                         field="body.approver")  # fmt: skip
        approver = principal.identity
        approval = engine.get_approval(approval_id)
        if approval.actor == principal.identity:
            raise refuse(request, 403, f"{principal.identity!r} made this call and cannot approve it", principal)
    result = engine.resolve_approval(approval_id, body.resolution, approver=approver, comment=body.comment)
    notify(request, approval_id)
    return result


@router.post("/approvals/expire", response_model=list[Approval], summary="Close every pending approval past its deadline")
def expire(request: Request, principal: Admin) -> list[Approval]:
    return engine_of(request).expire_approvals()
