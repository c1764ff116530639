"""The web dashboard, a face beside the API: served at ``/`` by ``clearance serve``.

Pages for the people who approve calls and watch agents: the approvals desk, the decision log
and each decision, rules, the kill switch, learning and the audit trail. Server-rendered
(Jinja2), with a few lines of script for the live approvals list (Server-Sent Events); nothing
is fetched from anywhere but this server. It reaches state only through the engine, signs in
with the API's keys (approver and admin roles; agent keys cannot) and keeps a signed session
cookie (:mod:`.session`).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from clearance.server.dashboard import approvals, decisions, learning, ops, rules
from clearance.server.dashboard.render import HERE, redirect, render
from clearance.server.dashboard.session import SESSION_SECONDS, csrf_ok, page, safe_next, sign_in, viewer_of

__all__ = ["SESSION_COOKIE", "create_dashboard", "mount", "session_secret"]

SESSION_COOKIE = "clearance_session"


def session_secret(given: str | None = None) -> str:
    """The key that signs session cookies: given, else ``CLEARANCE_SESSION_SECRET``, else a new
    random one (sessions then end when the server restarts; ``clearance serve --workers N``
    sets one for all its workers)."""
    return given or os.environ.get("CLEARANCE_SESSION_SECRET") or secrets.token_urlsafe(32)


async def login(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    from clearance.server.auth import refuse
    from clearance.server.dashboard.render import refused

    target = safe_next(request.query_params.get("next"))
    if request.method == "GET":
        if await run_in_threadpool(viewer_of, request) is not None:
            return redirect(target)
        return render(request, None, "login.html", next=target, error=None)
    form: FormData = await request.form()
    if not csrf_ok(request, form):
        await run_in_threadpool(refuse, request, 403, "a dashboard sign-in without a valid CSRF token")
        return refused(request, 403, "This form has expired or did not come from this dashboard. Reload the page and try again.")
    key = form.get("key")
    result = await run_in_threadpool(sign_in, request, key if isinstance(key, str) else "")
    if isinstance(result, str):
        return render(request, None, "login.html", status=401 if "not valid" in result else 403, next=target, error=result)
    return redirect(target)


def logout(request: Request, viewer: Any, form: FormData | None) -> Response:
    request.session.clear()
    return redirect("/login")


def _routes() -> list[Route | Mount]:
    routes: list[Route | Mount] = [Route("/login", login, methods=["GET", "POST"]),
                                   Route("/logout", page(logout), methods=["POST"])]  # fmt: skip
    for module in (approvals, decisions, rules, ops, learning):
        routes += [Route(path, endpoint, methods=methods) for path, endpoint, methods in module.ROUTES]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    return routes


def create_dashboard(state: Any, *, secret: str | None = None, secure_cookies: bool = True) -> Starlette:
    """The dashboard as an ASGI app sharing ``state`` (the API app's: engine, refusals, loop)."""
    app = Starlette(routes=_routes(), middleware=[
        Middleware(SessionMiddleware, secret_key=session_secret(secret), session_cookie=SESSION_COOKIE,
                   max_age=SESSION_SECONDS, same_site="strict", https_only=secure_cookies)])  # fmt: skip
    app.state = state
    if not hasattr(state, "approval_listeners"):
        state.approval_listeners = set()
    return app


def mount(api: Any, *, secret: str | None = None, secure_cookies: bool = True) -> Starlette:
    """Serve the dashboard from the API app: each of its paths is routed into it, so every
    other path (an unknown ``/v1/...``) still gets the API's own answer."""
    dashboard = create_dashboard(api.state, secret=secret, secure_cookies=secure_cookies)
    api.state.dashboard = dashboard
    for route in dashboard.routes:
        if isinstance(route, Mount):
            api.router.routes.append(route)  # the vendored static files: no session needed
        else:
            api.router.routes.append(Route(route.path, dashboard, methods=sorted(route.methods or ()),
                                           include_in_schema=False))  # fmt: skip
    return dashboard


