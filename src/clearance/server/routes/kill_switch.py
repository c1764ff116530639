"""The kill switch: block everything, or one domain, tool or actor, at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from clearance.model import KillSwitch
from clearance.server import schemas as S
from clearance.server.auth import Principal, require
from clearance.server.deps import engine_of

router = APIRouter(tags=["kill switch"])

Admin = Annotated[Principal, Depends(require())]


@router.post("/kill-switches", response_model=KillSwitch,
             summary="Block every matching call until deactivated (no scope: everything)")  # fmt: skip
def activate(body: S.KillSwitchRequest, request: Request, principal: Admin) -> KillSwitch:
    return engine_of(request).activate_kill_switch(domain=body.domain, tool=body.tool, actor=body.actor,
                                                   reason=body.reason, by=principal.identity)  # fmt: skip


@router.post("/kill-switches/deactivate", response_model=S.DeactivatedResponse, summary="Lift a kill switch")
def deactivate(body: S.KillSwitchScope, request: Request, principal: Admin) -> S.DeactivatedResponse:
    done = engine_of(request).deactivate_kill_switch(domain=body.domain, tool=body.tool, actor=body.actor,
                                                     by=principal.identity)  # fmt: skip
    return S.DeactivatedResponse(deactivated=done)
