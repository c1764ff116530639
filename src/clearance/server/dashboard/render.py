"""Pages out of Jinja2 templates, with what every page shows (who is signed in, the kill switch,
messages from the last action) and the filters the templates use."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from clearance.server.dashboard.session import Viewer, csrf_token, engine_of

__all__ = ["flash", "redirect", "refused", "render"]

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescaped: everything shown is data, never markup


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _left(at: datetime | None) -> str:
    """Time until ``at`` in words (``3 h 5 min``), or ``expired``."""
    if at is None:
        return ""
    seconds = int((at - datetime.now(timezone.utc)).total_seconds())
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _limits(rule: Any) -> dict[str, Any]:
    """A rule's limits, condition and effect: everything but what names and selects it."""
    return rule.model_dump(mode="json", exclude_none=True, exclude={"id", "description", "domain", "tool", "actors", "status"})


templates.env.filters.update(when=_when, left=_left, pretty=_pretty, money=_money, limits=_limits)


def flash(request: Request, text: str, kind: str = "ok") -> None:
    """A message for the next page this session sees (after a redirect)."""
    request.session.setdefault("flash", [])
    request.session["flash"] = [*request.session["flash"], [kind, text]][-5:]


def render(request: Request, viewer: Viewer | None, name: str, status: int = 200, *, fragment: bool = False,
           **context: Any) -> HTMLResponse:  # fmt: skip
    """A page (or, with ``fragment``, part of one, which leaves the messages for the next page)."""
    switches = engine_of(request).kill_switches() if viewer is not None and not fragment else []
    messages = request.session.pop("flash", []) if viewer is not None and not fragment else []
    return templates.TemplateResponse(request, name, {"viewer": viewer, "csrf": csrf_token(request), "switches": switches,
                                                      "messages": messages, **context}, status_code=status)  # fmt: skip


def refused(request: Request, status: int, message: str) -> Response:
    return templates.TemplateResponse(request, "refused.html", {"viewer": None, "csrf": "", "switches": [], "messages": [],
                                                                "status": status, "message": message},
                                      status_code=status)  # fmt: skip


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)
