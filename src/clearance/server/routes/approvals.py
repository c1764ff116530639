"""Approvals: list, read, wait for (one JSON answer, or a Server-Sent Events stream), resolve."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from clearance.model import Approval, ApprovalStatus
from clearance.server import schemas as S
from clearance.server.auth import Principal, require
from clearance.server.deps import answering_as, check_actor, engine_of

router = APIRouter(tags=["approvals"])
log = logging.getLogger("clearance.server")

ApprovalId = Annotated[str, Path(min_length=1, max_length=64)]
Reader = Annotated[Principal, Depends(require("agent", "approver"))]
Approver = Annotated[Principal, Depends(require("approver"))]

#: How often a waiting request looks at the store (resolutions made through this server wake it at once).
POLL_SECONDS = 0.2
#: The same while the store announces every approval change (PostgreSQL's LISTEN is in force):
#: a safety net only, so a few hundred waiters cost the database little.
WATCHED_POLL_SECONDS = 2.0


def _waiters(request: Request) -> dict[str, set[asyncio.Event]]:
    return request.app.state.approval_waiters  # type: ignore[no-any-return]


def wake(app: Any, approval_id: str) -> None:
    """Wake this server's waiters on ``approval_id`` and on any approval (the dashboard's live
    list), on the event loop's thread."""
    for event in [*app.state.approval_waiters.get(approval_id, ()), *getattr(app.state, "approval_listeners", ())]:
        event.set()


def notify(request: Request, approval_id: str) -> None:
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        loop.call_soon_threadsafe(wake, request.app, approval_id)


def _poll_seconds(request: Request) -> float:
    watcher = getattr(request.app.state, "approval_watcher", None)
    return WATCHED_POLL_SECONDS if watcher is not None and watcher.listening.is_set() else POLL_SECONDS


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


_SSE_DOC = """With `Accept: text/event-stream`, a Server-Sent Events stream instead of one JSON answer:
`event: waiting` at once and then every few seconds while the approval is pending (its `data:`
is the pending Approval; the heartbeats keep proxies from closing an idle connection), then one
`event: resolved` (approved, rejected or expired) or `event: timeout` (still pending after
`timeout_seconds`) whose `data:` is the Approval as JSON, and the stream ends."""

_SSE_EXAMPLE = ('event: waiting\ndata: {"approval_id": "apr_...", "status": "pending", ...}\n\n'
                'event: resolved\ndata: {"approval_id": "apr_...", "status": "approved", ...}\n\n')

#: Seconds between ``event: waiting`` heartbeats of a stream; ``app.state.sse_heartbeat_seconds`` overrides it.
HEARTBEAT_SECONDS = 5.0


async def _watch(request: Request, principal: Principal, approval_id: str, timeout_seconds: float,
                 heartbeat: float | None) -> AsyncIterator[tuple[str, Approval]]:  # fmt: skip
    """``("waiting", approval)`` at once and every ``heartbeat`` seconds (never when it is None),
    then ``("resolved", approval)`` or, past the timeout, ``("timeout", approval)``.

    Looks at the store every POLL_SECONDS, and at once when this server resolves the approval,
    so resolutions made elsewhere (another worker, the command line) are seen too; on
    PostgreSQL, at once when anybody resolves it (``wake``, from the store's LISTEN), with a
    poll every WATCHED_POLL_SECONDS as a safety net."""
    now = time.monotonic()
    deadline, next_beat = now + timeout_seconds, now
    waiters = _waiters(request)
    event = asyncio.Event()
    waiters.setdefault(approval_id, set()).add(event)
    try:
        while True:
            approval = await run_in_threadpool(_get, request, principal, approval_id)
            now = time.monotonic()
            left = deadline - now
            if approval.status is not ApprovalStatus.pending:
                yield "resolved", approval
                return
            if left <= 0:
                yield "timeout", approval
                return
            if heartbeat is not None and now >= next_beat:
                yield "waiting", approval
                next_beat = now + heartbeat
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), timeout=min(_poll_seconds(request), left))
            except asyncio.TimeoutError:
                pass
    finally:
        mine = waiters.get(approval_id)
        if mine is not None:
            mine.discard(event)
            if not mine:
                waiters.pop(approval_id, None)


async def _event_stream(request: Request, principal: Principal, approval_id: str, timeout_seconds: float) -> AsyncIterator[str]:
    heartbeat = float(getattr(request.app.state, "sse_heartbeat_seconds", HEARTBEAT_SECONDS))
    watch = _watch(request, principal, approval_id, timeout_seconds, heartbeat)
    try:
        async for kind, approval in watch:
            yield f"event: {kind}\ndata: {approval.model_dump_json()}\n\n"
    except Exception as exc:  # noqa: BLE001 - the 200 is sent already: say what went wrong in the stream
        log.exception("approval event stream %s failed", approval_id)
        yield f"event: error\ndata: {json.dumps({'error': {'type': 'internal_error', 'message': str(exc) or type(exc).__name__}})}\n\n"
    finally:
        await watch.aclose()


@router.get("/approvals/{approval_id}/wait", response_model=Approval,
            summary="Long-poll until the approval is no longer pending, or the timeout passes",
            description="Answers as soon as the approval is approved, rejected or expired; after `timeout_seconds` it "
                        "answers with the approval still `pending` (status 200 either way).\n\n" + _SSE_DOC,
            responses={200: {"description": "The approval (JSON), or with `Accept: text/event-stream` a stream of events",
                             "content": {"text/event-stream": {"schema": {"type": "string", "description": _SSE_DOC},
                                                               "example": _SSE_EXAMPLE}}}})  # fmt: skip
async def wait_approval(
    approval_id: ApprovalId,
    request: Request,
    principal: Reader,
    timeout_seconds: Annotated[float, Query(ge=0, le=300, description="Answer with the pending approval after this long.")] = 30.0,
) -> Any:
    """Answers as soon as the approval is approved, rejected or expired; after ``timeout_seconds``
    it answers with the approval still ``pending`` (status 200 either way); with ``Accept:
    text/event-stream``, the same as a stream with heartbeats (see ``_SSE_DOC``)."""
    if "text/event-stream" in request.headers.get("accept", "").lower():
        await run_in_threadpool(_get, request, principal, approval_id)  # unknown or forbidden: the usual error envelope
        return StreamingResponse(_event_stream(request, principal, approval_id, timeout_seconds),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
    async with aclosing(_watch(request, principal, approval_id, timeout_seconds, None)) as watch:
        async for _kind, approval in watch:  # without heartbeats: exactly one, the answer
            pass
    return approval


@router.post("/approvals/{approval_id}/resolve", response_model=Approval,
             summary="Record one approver's answer; of concurrent answers exactly one takes effect")  # fmt: skip
def resolve(approval_id: ApprovalId, body: S.ResolveRequest, request: Request, principal: Approver) -> Approval:
    engine = engine_of(request)
    approver = answering_as(request, principal, approval_id, body.approver)
    result = engine.resolve_approval(approval_id, body.resolution, approver=approver, comment=body.comment)
    answered(request, approval_id)
    return result


def answered(request: Request, approval_id: str) -> None:
    """After an answer given through this server (the API or the dashboard): wake whoever waits
    on that approval or on any, and send ``approval.resolved`` now rather than at the next poll."""
    notify(request, approval_id)
    webhooks = getattr(request.app.state, "webhooks", None)
    if webhooks is not None:
        webhooks.wake()
