"""Liveness and readiness, without a key."""

from __future__ import annotations

from fastapi import APIRouter, Request

from clearance import __version__
from clearance.server import schemas as S
from clearance.server.deps import engine_of
from clearance.server.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/health", response_model=S.Health, summary="The process answers")
def health() -> S.Health:
    return S.Health(status="ok", version=__version__)


@router.get("/ready", response_model=S.Readiness, summary="The store answers and the policy loads")
def ready(request: Request) -> S.Readiness:
    try:
        ruleset = engine_of(request).current_rules()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        raise ApiError(503, "unavailable", f"the store is not ready: {type(exc).__name__}") from None
    return S.Readiness(status="ready", policy_version=ruleset.policy_version)
