"""Learning: decisions over time by result, outcomes by status, calibration (predicted risk
against the observed bad-outcome rate) and the verdicts memory changed."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from clearance.model import DecisionResult
from clearance.server.dashboard.charts import calibration_plot, stacked_bars
from clearance.server.dashboard.render import render
from clearance.server.dashboard.session import Viewer, engine_of, page

#: The newest decisions drawn over time, and the outcome reports counted.
DECISIONS = 5000
OUTCOMES = 50_000
BARS = 48


def _over_time(request: Request) -> dict[str, object]:
    decisions = engine_of(request).list_decisions(limit=DECISIONS)
    if not decisions:
        return {"labels": [], "rows": [], "chart": None, "n": 0}
    newest, oldest = decisions[0].decided_at, decisions[-1].decided_at
    hourly = newest - oldest <= timedelta(days=2)
    fmt = "%m-%d %H:00" if hourly else "%Y-%m-%d"
    counts: dict[str, Counter[str]] = {}
    for d in reversed(decisions):
        counts.setdefault(d.decided_at.strftime(fmt), Counter())[d.result.value] += 1
    labels = list(counts)[-BARS:]
    names = [r.value for r in DecisionResult]
    series = {name: [counts[label][name] for label in labels] for name in names}
    chart = stacked_bars(labels, series, title=f"Decisions per {'hour' if hourly else 'day'} by result")
    rows = [(label, [counts[label][name] for name in names]) for label in labels]
    return {"labels": labels, "rows": rows, "chart": chart, "n": len(decisions), "names": names, "hourly": hourly}


def _outcomes(request: Request) -> Counter[str]:
    engine, after, seen = engine_of(request), 0, Counter[str]()
    while sum(seen.values()) < OUTCOMES:
        events = engine.audit_events(type="outcome.reported", after_seq=after, limit=1000)
        seen.update(str(e.payload.get("status")) for e in events)
        if len(events) < 1000:
            break
        after = events[-1].seq
    return seen


def learning(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    report = engine_of(request).learning_report()
    outcomes = _outcomes(request)
    calibration = report.calibration or {}
    return render(request, viewer, "learning.html", report=report, over_time=_over_time(request), outcomes=outcomes,
                  outcome_chart=stacked_bars(list(outcomes), {"outcome": list(outcomes.values())}, title="Outcomes by status",
                                             height=160) if outcomes else None,
                  calibration=calibration, calibration_chart=calibration_plot(calibration.get("reliability") or []),
                  decisions_scanned=DECISIONS, active="learning")  # fmt: skip


ROUTES = [("/learning", page(learning, needs="learning_report"), ["GET"])]
