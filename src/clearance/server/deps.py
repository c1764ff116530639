"""What route handlers share: the engine, the caller, and the identity checks of agent keys."""

from __future__ import annotations

from fastapi import Request

from clearance.engine import Engine
from clearance.server.auth import Principal, refuse

__all__ = ["answering_as", "check_actor", "engine_of"]


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def check_actor(request: Request, principal: Principal, actor: str, what: str = "a call") -> None:
    """Agent keys act for their own identity only; other roles are not restricted here."""
    if principal.role == "agent" and actor != principal.identity:
        raise refuse(request, 403, f"this agent key speaks for {principal.identity!r} and may not act on {what} "
                     f"of actor {actor!r}", principal, field="actor")  # fmt: skip


def answering_as(request: Request, principal: Principal, approval_id: str, named: str | None = None) -> str:
    """Who answers an approval for this key: an admin as ``named`` (default: itself), anyone
    else as its own identity only, and never for a call that identity made. The API's
    resolve route and the dashboard's approvals desk both ask here; a refusal is audited."""
    if principal.is_admin:
        return named or principal.identity
    if named is not None and named != principal.identity:
        raise refuse(request, 403, f"this key answers as {principal.identity!r}, not {named!r}", principal,
                     field="body.approver")  # fmt: skip
    if engine_of(request).get_approval(approval_id).actor == principal.identity:
        raise refuse(request, 403, f"{principal.identity!r} made this call and cannot approve it", principal)
    return principal.identity
