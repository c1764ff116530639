"""The audit trail: query events, verify the hash chain; and what memory learnt from it."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Query, Request

from clearance.memory.report import LearningReport
from clearance.model import Event
from clearance.server import schemas as S
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
) -> list[Event]:
    return engine_of(request).audit_events(request_id=request_id, trace_id=trace_id, type=type, after_seq=after_seq,
                                           limit=limit)  # fmt: skip


@router.get("/audit/verify", response_model=S.AuditReportResponse,
            summary="Check the hash chain; names the first broken link if anything was altered")  # fmt: skip
def verify(request: Request, principal: Reader) -> S.AuditReportResponse:
    return S.AuditReportResponse(**engine_of(request).verify_audit().as_dict())


@router.get("/learning/report", response_model=LearningReport,
            summary="What memory changed, and how well its risk matched the outcomes reported")  # fmt: skip
def learning_report(request: Request, principal: Reader) -> LearningReport:
    return engine_of(request).learning_report()
