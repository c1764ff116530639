"""The approvals desk: pending approvals oldest first, each with what it would do, why it
waits, its precedents, time left and quorum; approve or reject with a comment; kept current
over Server-Sent Events while other approvers (here, through the API or the CLI) act."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from clearance.errors import ClearanceError
from clearance.model import Approval, ApprovalStatus
from clearance.server.dashboard.render import flash, redirect, render
from clearance.server.dashboard.session import Viewer, engine_of, form_text, page, viewer_of
from clearance.server.deps import answering_as
from clearance.server.errors import ApiError
from clearance.server.routes.approvals import answered

#: How often the live list looks at the store (answers given through this server wake it at once).
POLL_SECONDS = 0.5
#: A comment line every so often keeps proxies from closing a quiet stream, and notices a revoked key.
HEARTBEAT_SECONDS = 15.0


def _cards(request: Request) -> list[dict[str, Any]]:
    """Each pending approval with the decision it waits on (its precedents and their outcomes)."""
    engine = engine_of(request)
    cards = []
    for approval in engine.list_approvals(ApprovalStatus.pending, limit=200):
        decision = engine.get_decision(approval.request_id)
        cards.append({"approval": approval, "decision": decision, "approved": _approvals(approval)})
    return cards


def _approvals(approval: Approval) -> int:
    return sum(v.resolution == "approved" for v in approval.votes)


def _state(approvals: list[Approval]) -> tuple[tuple[str, int], ...]:
    return tuple((a.approval_id, len(a.votes)) for a in approvals)


def desk(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    return render(request, viewer, "approvals.html", cards=_cards(request), active="approvals")


def desk_list(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """The list alone, which the page fetches when the stream says it changed."""
    return render(request, viewer, "approvals_list.html", fragment=True, cards=_cards(request))


def resolve(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    approval_id = request.path_params["approval_id"]
    resolution = form_text(form, "resolution")
    comment = form_text(form, "comment", 2000)
    if resolution not in ("approved", "rejected"):
        flash(request, "Choose approve or reject.", "error")
        return redirect("/")
    try:
        approver = answering_as(request, viewer.principal, approval_id)
        approval = engine_of(request).resolve_approval(approval_id, resolution, approver=approver, comment=comment)
    except ApiError as exc:
        flash(request, exc.message, "error")
        return redirect("/")
    except ClearanceError as exc:
        flash(request, str(exc), "error")
        return redirect("/")
    answered(request, approval_id)
    verb = "Approved" if resolution == "approved" else "Rejected"
    if approval.status is ApprovalStatus.pending:
        flash(request, f"{verb} {approval.tool} ({approval_id}); it still needs "
                       f"{approval.approvals_required - _approvals(approval)} more approval.")  # fmt: skip
    else:
        flash(request, f"{verb} {approval.tool} ({approval_id}).")
    return redirect("/")


async def _stream(request: Request) -> AsyncIterator[str]:
    wake = asyncio.Event()
    listeners: set[asyncio.Event] = request.app.state.approval_listeners
    listeners.add(wake)
    engine = engine_of(request)
    loop = asyncio.get_running_loop()
    try:
        last = _state(await run_in_threadpool(engine.list_approvals, ApprovalStatus.pending, limit=200))
        yield "retry: 2000\nevent: ready\ndata: {}\n\n"
        beat = loop.time() + HEARTBEAT_SECONDS
        while not await request.is_disconnected():
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout=POLL_SECONDS)
            except asyncio.TimeoutError:
                pass
            now = _state(await run_in_threadpool(engine.list_approvals, ApprovalStatus.pending, limit=200))
            if now != last:
                last = now
                yield "event: changed\ndata: {}\n\n"
            if loop.time() >= beat:
                if await run_in_threadpool(viewer_of, request) is None:
                    yield "event: signed-out\ndata: {}\n\n"
                    return
                yield ": still here\n\n"
                beat = loop.time() + HEARTBEAT_SECONDS
    finally:
        listeners.discard(wake)


def events(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """``text/event-stream``: ``changed`` whenever the pending approvals or their votes change."""
    return StreamingResponse(_stream(request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


ROUTES = [
    ("/", page(desk), ["GET"]),
    ("/approvals/list", page(desk_list), ["GET"]),
    ("/approvals/{approval_id}/resolve", page(resolve, needs="resolve_approval"), ["POST"]),
    ("/approvals/events", page(events), ["GET"]),
]
