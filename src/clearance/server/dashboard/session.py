"""Who is looking: the login form, the session cookie, CSRF, and the wrapper every page goes through.

The session is Starlette's ``SessionMiddleware``: a cookie signed with itsdangerous, HTTP-only,
``Secure`` and ``SameSite=Strict``. It holds the key's id (never its secret) and a CSRF token;
every request reads the key again (``engine.keys.get``), so a revoked key's session ends at once.
CSRF is the synchronizer-token pattern on that signed session: one random token per login,
sent back in every form and compared in constant time. With the session already signed and
same-site, a separate CSRF middleware would add a second cookie and a second reading of each
form body for nothing.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from clearance.engine import Engine
from clearance.engine.contract import OPERATIONS
from clearance.engine.keys import Principal
from clearance.server.auth import identify, refuse
from clearance.server.errors import ApiError

__all__ = ["Viewer", "csrf_token", "may", "page"]

#: How long a session lasts without signing in again.
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Viewer:
    """The person signed in: their key (as the API sees it) and their CSRF token."""

    principal: Principal
    csrf: str

    @property
    def identity(self) -> str:
        return self.principal.identity

    def may(self, operation: str) -> bool:
        return may(self.principal, operation)


def may(principal: Principal, operation: str) -> bool:
    """Whether a key's role may call an engine operation, by the contract's table (as the API decides)."""
    return principal.is_admin or principal.role in OPERATIONS[operation].roles


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use (the login form has one too)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def csrf_ok(request: Request, form: FormData) -> bool:
    expected, given = request.session.get("csrf"), form.get("csrf")
    return isinstance(expected, str) and isinstance(given, str) and hmac.compare_digest(expected, given)


def viewer_of(request: Request) -> Viewer | None:
    """The signed-in viewer, or None: no session, a revoked or unknown key, or an agent key."""
    key_id = request.session.get("key_id")
    if not isinstance(key_id, str):
        return None
    key = engine_of(request).keys.get(key_id)
    if key is None or key.revoked_at is not None or key.role == "agent":
        return None
    principal = Principal(key_id=key.key_id, name=key.name, role=key.role, identity=key.identity)
    return Viewer(principal, csrf_token(request))


def sign_in(request: Request, token: str) -> Principal | str:
    """The principal of a key that may use the dashboard, else why not (the refusal is audited)."""
    try:  # the API's one reading of a key: failures counted and throttled per address and key id
        principal = identify(request.app.state, request.client.host if request.client else None, token.strip())
    except ApiError as exc:
        return f"Too many failed sign-ins from this address; try again in {exc.retry_after} s."
    if principal is None:
        refuse(request, 401, "dashboard sign-in with a key that is not valid or was revoked")
        return "That key is not valid, or it was revoked."
    if principal.role == "agent":
        refuse(request, 403, "agent keys may not sign in to the dashboard", principal)
        return "Agent keys cannot sign in to the dashboard; use an approver or admin key."
    request.session.clear()  # a fresh session: nothing from before the sign-in carries over
    request.session.update({"key_id": principal.key_id, "csrf": secrets.token_urlsafe(32)})
    return principal


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


Handler = Callable[[Request, Viewer, FormData | None], Response]


def page(handler: Handler, *, needs: str | None = None) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that answers only a signed-in viewer: no session, a GET goes to the login
    form and anything else gets 401; a POST without this session's CSRF token gets 403; a
    role that may not call ``needs`` (an engine operation) gets 403. The handler runs in a
    worker thread (it calls the engine, which blocks) with the form already read."""

    async def endpoint(request: Request) -> Response:
        from clearance.server.dashboard.render import refused

        viewer = await run_in_threadpool(viewer_of, request)
        if viewer is None:
            if request.method == "GET" and "text/event-stream" not in request.headers.get("accept", ""):
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)
            await run_in_threadpool(refuse, request, 401, "no dashboard session")
            return refused(request, 401, "Sign in first.")
        form = None
        if request.method == "POST":
            form = await request.form()
            if not csrf_ok(request, form):
                await run_in_threadpool(refuse, request, 403, "a dashboard form without a valid CSRF token", viewer.principal)
                return refused(request, 403, "This form has expired or did not come from this dashboard. Reload the page and try again.")
        if needs is not None and not viewer.may(needs):
            await run_in_threadpool(refuse, request, 403, f"the {viewer.principal.role} role may not {needs}", viewer.principal)
            return refused(request, 403, f"Your role ({viewer.principal.role}) may not do this.")
        return await run_in_threadpool(handler, request, viewer, form)

    endpoint.__name__ = handler.__name__
    return endpoint


def form_text(form: FormData | None, name: str, limit: int = 10_000) -> str | None:
    """A form field as stripped text, None when missing or empty; cut at ``limit`` characters."""
    value = form.get(name) if form is not None else None
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] or None


