"""What route handlers share: the engine, the caller, and the identity checks of agent keys."""

from __future__ import annotations

import re

from fastapi import HTTPException, Request

from clearance.engine import Engine
from clearance.errors import NotFound
from clearance.model import Name
from clearance.server.auth import Principal, refuse

__all__ = ["answering_as", "check_actor", "engine_of", "printable_request"]

#: One line of printable text, as the model declares every name and id (``clearance.model.Name``).
_PRINTABLE = re.compile(Name.__metadata__[0].pattern)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def check_actor(request: Request, principal: Principal, actor: str, what: str = "a call") -> None:
    """Agent keys act for their own identity only; other roles are not restricted here."""
    if principal.role == "agent" and actor != principal.identity:
        raise refuse(request, 403, f"this agent key speaks for {principal.identity!r} and may not act on {what} "
                     f"of actor {actor!r}", principal, field="actor")  # fmt: skip


def printable_request(request: Request) -> None:
    """Ids in the path and values in the query are one line of printable text, like every name
    the model accepts: no id with a NUL or another control character can exist, and PostgreSQL
    refuses even to look one up (which was a 500). A router dependency of every ``/v1`` route."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and not _PRINTABLE.match(value):
            raise NotFound(f"no {name.replace('_', ' ')} holds control characters")
    for name, value in request.query_params.multi_items():
        if value and not _PRINTABLE.match(value):
            raise HTTPException(422, f"the query parameter {name!r} holds a NUL or another control character")


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
