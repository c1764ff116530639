"""``clearance explain`` and ``clearance learning report``: what memory saw and what it changed."""

from __future__ import annotations

from typing import Annotated

import typer

from clearance.cli import render

learning_app = typer.Typer(help="What the engine learned from outcomes.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]


def explain(request_id: str, as_json: JsonFlag = False) -> None:
    """Why a call got its verdict: the rules that fired, the risk and the precedents behind it."""
    from clearance.cli import _engine

    with _engine(reading=True) as engine:
        d = engine.get_decision(request_id)
        action = engine.get_action(request_id)
        outcomes = engine.outcomes(request_id)
    if as_json:
        render.emit_json({"decision": d.model_dump(mode="json"), "action": action.model_dump(mode="json"),
                          "outcomes": [o.model_dump(mode="json") for o in outcomes]})  # fmt: skip
        return
    render.decision(d)
    if d.rules_result is not None and d.rules_result != d.result:
        render.out.print(f"  rules alone {render.badge(d.rules_result.value)}: memory tightened the verdict")
    render.out.print(f"  evidence    {d.evidence:.2f} weighted precedents")
    if d.risk_summary:
        render.out.print(f"  precedents  {render.safe(d.risk_summary)}")
    if d.precedents:
        render.table(("precedent", "similar", "outcome", "cost", "decided"),
                     [(p.request_id, f"{p.similarity:.2f}", render.badge(p.outcome or "unknown"),
                       "-" if p.cost is None else f"{p.cost:,.2f}",
                       "-" if p.decided_at is None else f"{p.decided_at:%Y-%m-%d %H:%M}") for p in d.precedents])  # fmt: skip
    for o in outcomes:
        render.out.print(f"  outcome     {render.badge(o.status.value)} cost {o.cost:,.2f} {render.safe(o.description or '')}")


@learning_app.command("report")
def report(
    as_json: JsonFlag = False,
    examples: Annotated[int, typer.Option(help="Changed decisions to list.")] = 10,
) -> None:
    """Decisions memory changed, harm they avoided, approvals added, calibration, evidence per tool."""
    from clearance.cli import _engine

    with _engine(reading=True) as engine:
        r = engine.learning_report()
    r.changed = r.changed[:examples]
    if as_json:
        render.emit_json(r.as_dict())
        return
    out = render.out
    out.print(f"decisions {r.decisions}, with a known outcome {r.with_outcome}")
    out.print(f"changed by memory {r.changed_by_memory}: {r.approvals_added} sent to approval, "
              f"{r.blocked_by_memory} blocked; {r.changed_rejected} rejected by a reviewer")  # fmt: skip
    out.print(f"  of those that ran anyway, {r.changed_approved_then_bad} went badly "
              f"(cost {r.changed_harm_cost_observed:,.2f})")  # fmt: skip
    out.print(f"  harm cost avoided (estimate: risk x precedents' cost) {r.harm_cost_avoided_estimate:,.2f}")
    c = r.calibration
    if c.get("n"):
        out.print(f"calibration on {c['n']} outcomes: Brier {c['brier']:.4f} (base rate alone {c['brier_base_rate']:.4f}), "
                  f"ECE {c['ece']:.4f}")  # fmt: skip
        render.table(("risk", "n", "mean risk", "observed bad rate"),
                     [(f"{row['from']:.1f}-{row['to']:.1f}", str(row["n"]), f"{row['mean_risk']:.3f}",
                       f"{row['observed_bad_rate']:.3f}") for row in c["reliability"]])  # fmt: skip
    else:
        out.print("calibration: no outcomes reported yet")
    if r.tools:
        render.table(("tool", "decisions", "with outcome", "bad rate", "mean evidence", "changed by memory"),
                     [(render.safe(name), str(t["decisions"]), str(t["with_outcome"]),
                       "-" if t["bad_rate"] is None else f"{t['bad_rate']:.3f}", f"{t['mean_evidence']:.2f}",
                       str(t["changed_by_memory"])) for name, t in r.tools.items()])  # fmt: skip
    for ch in r.changed:
        out.print(f"  {ch['request_id']}  {ch['rules_result']} -> {render.badge(ch['result'])}  {render.safe(ch['reason'])}")
