"""The kill switch (its state; engage with one confirmed click, release) and the audit trail
(verify on demand, showing the first broken link; export a time range as JSON lines)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from clearance.errors import ClearanceError
from clearance.server.dashboard.decisions import parse_time
from clearance.server.dashboard.render import flash, redirect, render
from clearance.server.dashboard.session import Viewer, engine_of, form_text, page

SCOPES = ("all", "domain", "tool", "actor")


def _scope(form: FormData | None) -> dict[str, str]:
    scope = form_text(form, "scope") or "all"
    value = form_text(form, "value", 256)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if scope == "all":
        return {}
    if value is None:
        raise ValueError(f"name the {scope} the switch covers")
    return {scope: value}


def kill_switch(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    return render(request, viewer, "kill_switch.html", scopes=SCOPES, active="kill")


def engage(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    try:
        switch = engine_of(request).activate_kill_switch(**_scope(form), reason=form_text(form, "reason", 1000),
                                                         by=viewer.identity)  # fmt: skip
    except (ClearanceError, ValueError) as exc:
        flash(request, str(exc), "error")
    else:
        what = "every call" if switch.scope == "all" else f"{switch.scope} {switch.value}"
        flash(request, f"Kill switch engaged: {what} is blocked.")
    return redirect("/kill-switch")


def release(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    try:
        done = engine_of(request).deactivate_kill_switch(**_scope(form), by=viewer.identity)
    except (ClearanceError, ValueError) as exc:
        flash(request, str(exc), "error")
    else:
        flash(request, "Kill switch released." if done else "That kill switch was not engaged.", "ok" if done else "error")
    return redirect("/kill-switch")


def audit(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    report = engine_of(request).verify_audit() if request.query_params.get("verify") else None
    return render(request, viewer, "audit.html", report=report, active="audit")


def _lines(request: Request, since: datetime | None, until: datetime | None) -> Iterator[str]:
    engine, after = engine_of(request), 0
    while True:
        page_ = engine.audit_events(after_seq=after, since=since, until=until, limit=1000)
        for event in page_:
            yield event.model_dump_json() + "\n"
        if len(page_) < 1000:
            return
        after = page_[-1].seq


def export(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """The events of a time range, oldest first, one JSON object a line (a download)."""
    try:
        since = parse_time(request.query_params.get("since"), "from")
        until = parse_time(request.query_params.get("until"), "to")
    except ValueError as exc:
        flash(request, str(exc), "error")
        return redirect("/audit")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(_lines(request, since, until), media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="clearance-audit-{stamp}.jsonl"'})  # fmt: skip


ROUTES = [
    ("/kill-switch", page(kill_switch), ["GET"]),
    ("/kill-switch/engage", page(engage, needs="activate_kill_switch"), ["POST"]),
    ("/kill-switch/release", page(release, needs="deactivate_kill_switch"), ["POST"]),
    ("/audit", page(audit, needs="verify_audit"), ["GET"]),
    ("/audit/export", page(export, needs="audit_events"), ["GET"]),
]
