"""What route handlers share: the engine, the caller, and the identity checks of agent keys."""

from __future__ import annotations

from fastapi import Request

from clearance.engine import Engine
from clearance.server.auth import Principal, refuse

__all__ = ["check_actor", "engine_of"]


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def check_actor(request: Request, principal: Principal, actor: str, what: str = "a call") -> None:
    """Agent keys act for their own identity only; other roles are not restricted here."""
    if principal.role == "agent" and actor != principal.identity:
        raise refuse(request, 403, f"this agent key speaks for {principal.identity!r} and may not act on {what} "
                     f"of actor {actor!r}", principal, field="actor")  # fmt: skip
