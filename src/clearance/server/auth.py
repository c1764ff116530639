"""Roles on top of API keys (the engine's :mod:`~clearance.engine.keys`).

Each key has a role and an identity (the actor or person it speaks for):

- ``agent``: decide calls (as its identity only), claim and record their executions, report
  outcomes, keep suspended runs, read its own decisions and approvals.
- ``approver``: read (decisions, approvals, rules, audit, kill switches) and resolve approvals,
  always as its own identity, never for a call made by that same identity.
- ``admin``: everything, including rules, the kill switch and keys; may act as any actor and
  name any approver.

Every refusal (401 without a valid key, 403 for a role or identity that may not) is answered
with the error envelope and appended to the audit trail as ``auth.refused``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from clearance.server.errors import ApiError
from clearance.engine.keys import ROLES, ApiKey, Keys, Principal, Role

__all__ = ["ROLES", "ApiKey", "Keys", "Principal", "Role", "bearer_token", "identify", "refuse", "require", "throttled"]

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer clr_...`.")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; empty when there is none."""
    auth = authorization or ""
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def refuse(request: Request, status: int, message: str, principal: Principal | None = None,
           field: str | None = None) -> ApiError:  # fmt: skip
    """Audit a refusal (bounded: :mod:`clearance.server.refusals`) and return the error to raise."""
    kind = "unauthorized" if status == 401 else "forbidden"
    # The route's template, never the raw path (a refused caller chooses the path). Routes are
    # matched under the /v1 prefix, which their own template leaves out.
    template = getattr(request.scope.get("route"), "path", None)
    route = request.url.path[:128] if template is None else template if template.startswith("/v1/") else f"/v1{template}"
    payload = {"status": status, "type": kind, "reason": message[:512], "method": request.method, "route": route,
               "key_id": principal.key_id if principal else None, "role": principal.role if principal else None,
               "identity": principal.identity if principal else None,
               "client": request.client.host if request.client else None,
               "correlation_id": getattr(request.state, "correlation_id", None)}  # fmt: skip
    request.app.state.refusals.note(payload)
    return ApiError(status, kind, message, field)


def identify(state: Any, client: str | None, token: str) -> Principal | None:
    """The principal of ``token``, or None (a failure, counted); 429 for a client that keeps failing.

    The one reading of a presented key for every route: an address or key prefix that failed
    too often is refused before any lookup (:mod:`clearance.server.throttle`).
    """
    throttle = state.throttle
    wait = throttle.retry_after(client, token)
    if wait is not None:
        raise throttled(state, wait)
    keys: Keys = state.keys
    # A verified key is cached for a second, so this reads the store about once a second per key.
    principal = keys.authenticate(token) if token else None
    if principal is None:
        throttle.failed(client, token)
        _count(state, "missing" if not token else "invalid")
    else:
        throttle.succeeded(token)
    return principal


def throttled(state: Any, wait: int) -> ApiError:
    """The 429 for a client that failed too often (counted), wherever it is answered."""
    _count(state, "throttled")
    return ApiError(429, "too_many_requests", f"too many failed authentications from this address; retry in {wait} s",
                    retry_after=wait)  # fmt: skip


def _count(state: Any, outcome: str) -> None:
    metrics = state.metrics
    if metrics is not None:
        metrics.observe_auth_failure(outcome)


async def principal_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    if credentials is None:
        identify(request.app.state, request.client.host if request.client else None, "")  # counted, maybe throttled
        raise await run_in_threadpool(refuse, request, 401, "an API key is required: send Authorization: Bearer <key>")
    principal = identify(request.app.state, request.client.host if request.client else None, credentials.credentials)
    if principal is None:
        raise await run_in_threadpool(refuse, request, 401, "the API key is not valid or was revoked")
    request.state.principal = principal
    return principal


def require(*roles: Role) -> Callable[..., Any]:
    """A dependency: the caller's key, refused with 401/403 unless its role is one of ``roles``
    (admin is always allowed)."""
    allowed = frozenset(roles) | {"admin"}

    async def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        principal = await principal_of(request, credentials)
        if principal.role not in allowed:
            raise await run_in_threadpool(refuse, request, 403, f"the {principal.role} role may not {request.method} "
                                          f"{request.url.path} (needs {' or '.join(sorted(allowed))})", principal)  # fmt: skip
        return principal

    dependency.__name__ = f"require_{'_'.join(sorted(allowed))}"
    return dependency
