"""The decision log (filtered by result, tool, actor, domain, rule and time) and one decision's
page: matched rules, risk and what drove it, precedents, execution, outcomes, approval, and its
audit events with the chain's status."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from clearance.errors import ClearanceError, UnknownRequest
from clearance.model import DecisionResult
from clearance.server.dashboard.render import render
from clearance.server.dashboard.session import Viewer, engine_of, page

PAGE = 50
FILTERS = ("result", "tool", "actor", "domain", "rule", "since", "until")


def parse_time(text: str | None, name: str) -> datetime | None:
    """A time typed in a form (``2026-05-01T14:30``, read as UTC, or with an offset)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a date and time such as 2026-05-01T14:30") from None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _filters(request: Request) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """What the form holds (shown back), the engine's arguments, and what was wrong with it."""
    shown = {k: request.query_params.get(k, "").strip()[:256] for k in FILTERS}
    args: dict[str, Any] = {k: shown[k] or None for k in ("tool", "actor", "domain", "rule")}
    errors = []
    if shown["result"]:
        if shown["result"] in DecisionResult.__members__:
            args["result"] = shown["result"]
        else:
            errors.append(f"result: {shown['result']!r} is not one of {', '.join(DecisionResult.__members__)}")
    for name in ("since", "until"):
        try:
            args[name] = parse_time(shown[name], name)
        except ValueError as exc:
            errors.append(str(exc))
    return shown, args, errors


def log(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    shown, args, errors = _filters(request)
    before = request.query_params.get("before") or None
    decisions = []
    if not errors:
        try:
            decisions = engine_of(request).list_decisions(**args, before=before, limit=PAGE)
        except UnknownRequest:
            errors.append("that page of the log is gone; start again from the newest")
    more = {**{k: v for k, v in shown.items() if v}, "before": decisions[-1].request_id} if len(decisions) == PAGE else None
    return render(request, viewer, "decisions.html", decisions=decisions, shown=shown, errors=errors, more=more,
                  results=list(DecisionResult.__members__), active="decisions")  # fmt: skip


def _chain_status(seq: int, report: Any) -> str:
    if report.ok or report.first_broken_seq is None or seq < report.first_broken_seq:
        return "intact"
    return "broken" if seq == report.first_broken_seq else "after a break"


def decision(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    engine = engine_of(request)
    request_id = request.path_params["request_id"]
    try:
        d = engine.get_decision(request_id)
    except ClearanceError:
        return render(request, viewer, "missing.html", status=404, what=f"decision {request_id}")
    approval = engine.get_approval(d.approval_id) if d.approval_id else None
    report = engine.verify_audit(request_id=request_id)  # this decision's events only: the Audit page checks the whole
    events = [{"event": e, "chain": _chain_status(e.seq, report)} for e in engine.audit_events(request_id=request_id, limit=1000)]
    return render(request, viewer, "decision.html", d=d, action=engine.get_action(request_id), approval=approval,
                  execution=engine.get_execution(request_id), outcomes=engine.outcomes(request_id), events=events,
                  report=report, active="decisions")  # fmt: skip


ROUTES = [
    ("/decisions", page(log, needs="list_decisions"), ["GET"]),
    ("/decisions/{request_id}", page(decision, needs="get_decision"), ["GET"]),
]
