"""The audit trail: query events and verify the chain (the learning report and checkpoints are plain operations)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Query, Request

from clearance.engine.audit import AuditReport
from clearance.model import Event
from clearance.server.auth import Principal, require
from clearance.server.deps import engine_of

router = APIRouter(tags=["audit"])

Reader = Annotated[Principal, Depends(require("approver"))]
Text = Annotated[Optional[str], Query(min_length=1, max_length=256)]


@router.get("/audit/events", response_model=list[Event], summary="Audit events, oldest first, after a sequence number")
def events(
    request: Request,
    principal: Reader,
    request_id: Text = None,
    trace_id: Text = None,
    type: Text = None,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: Annotated[Optional[datetime], Query(description="created_at >= since")] = None,
    until: Annotated[Optional[datetime], Query(description="created_at < until")] = None,
) -> list[Event]:
    return engine_of(request).audit_events(request_id=request_id, trace_id=trace_id, type=type, after_seq=after_seq,
                                           limit=limit, since=since, until=until)  # fmt: skip


@router.get("/audit/verify", response_model=AuditReport, summary="Check the audit chain, its checkpoints and the state tables")
def verify(request: Request, principal: Reader, request_id: Text = None) -> AuditReport:
    """With ``request_id``, only that request's events are checked for their place in the chain."""
    return engine_of(request).verify_audit(request_id=request_id)
