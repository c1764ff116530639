"""``clearance backtest`` and ``clearance rules evidence|promote``: a rule change judged on the record
before it takes effect."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clearance.cli import render
from clearance.engine.backtest import BacktestReport, OutcomeTally, backtest as run_backtest
from clearance.engine.evidence import RuleEvidence
from clearance.policy import load_rules
from clearance.policy.rules import parse_duration

__all__ = ["backtest", "evidence", "promote"]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]
SinceOption = Annotated[Optional[str], typer.Option(
    "--since", help="How far back: a duration ('30d', '12h') or a date/time ('2026-11-01', UTC unless given).")]  # fmt: skip


def parse_since(value: str | None, now: datetime) -> datetime | None:
    """``30d`` (back from now) or an ISO date/time (UTC when it names no zone)."""
    if value is None:
        return None
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a duration such as 30d or a date such as 2026-11-01, got {value!r}",
                                 param_hint="--since") from None  # fmt: skip
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def backtest(
    rules: Annotated[Path, typer.Option("--rules", help="The candidate rules file.")],
    since: SinceOption = None,
    examples: Annotated[int, typer.Option(help="Changed calls to list.", min=0)] = 10,
    as_json: JsonFlag = False,
) -> None:
    """What candidate rules would have done to the recorded decisions: verdict changes, the harm and
    cost they would have avoided, good calls stopped, approvals added, per rule. Writes nothing."""
    from clearance.cli import _engine

    source = load_rules(rules)
    with _engine() as engine:
        start = parse_since(since, engine.clock())
        with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=render.err, transient=True, disable=as_json) as bar:  # fmt: skip
            task = bar.add_task("replay", total=None)
            report = run_backtest(engine, source, since=start, examples=examples,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    if as_json:
        render.emit_json(report)
        return
    _show(report, rules)


def _tally_row(kind: str, t: OutcomeTally) -> list[str]:
    return [kind, str(t.calls), str(t.harmful), str(t.bad), str(t.succeeded), str(t.no_outcome), f"{t.cost:,.2f}"]


def _show(r: BacktestReport, rules: Path) -> None:
    window = f"since {render.when(r.since)}" if r.since else "all recorded history"
    render.out.print(f"[bold]backtest[/] of {render.safe(rules)} over {r.decisions} decision(s), {window}: "
                     f"{r.changed} verdict(s) change")  # fmt: skip
    if r.transitions:
        render.out.print("  " + ", ".join(f"{k}: {v}" for k, v in r.transitions.items()))
    table = Table("change", "calls", "harmful", "went wrong", "succeeded", "no outcome", "cost")
    for kind in ("newly_blocked", "newly_asking", "newly_allowed"):
        table.add_row(*_tally_row(kind.replace("_", " "), getattr(r, kind)))
    render.out.print(table)
    render.out.print(f"  harm avoided {r.harm_avoided} harmful call(s), cost avoided {r.cost_avoided:,.2f}; "
                     f"successful calls stopped {r.successful_stopped}; approval load added {r.approval_load_added:+d}")  # fmt: skip
    per_rule = Table("rule", "status", "fired", "blocks", "blocked cost", "good blocked", "asks", "asked cost")
    for ri in r.rules:
        per_rule.add_row(render.safe(ri.rule_id), ri.status, str(ri.fired), str(ri.newly_blocked.calls),
                         f"{ri.newly_blocked.cost:,.2f}", str(ri.newly_blocked.succeeded), str(ri.newly_asking.calls),
                         f"{ri.newly_asking.cost:,.2f}")  # fmt: skip
    render.out.print(per_rule)
    for c in r.examples:
        render.out.print(f"  {c.request_id} {render.safe(c.tool)} by {render.safe(c.actor)}: {render.badge(c.recorded.value)}"
                         f" -> {render.badge(c.candidate.value)} ({render.safe(c.reason)}); outcome {c.outcome or '-'}")  # fmt: skip


def _show_evidence(ev: RuleEvidence) -> None:
    precision = "-" if ev.precision is None else f"{ev.precision:.0%}"
    render.out.print(f"rule {render.safe(ev.rule_id)} v{ev.rule_version} ({ev.status}): would have fired on {ev.fired} of "
                     f"{ev.decisions} call(s) ({ev.would_block} blocked, {ev.would_ask} asked)")  # fmt: skip
    render.out.print(f"  with outcomes {ev.with_outcome}: {ev.bad} went wrong ({ev.harmful} harmful), {ev.succeeded} "
                     f"succeeded; cost {ev.cost:,.2f}")  # fmt: skip
    render.out.print(f"  precision {precision} against bad outcomes; friction {ev.friction} good call(s) stopped or asked")
    if ev.older_versions_fired:
        render.out.print(f"  (and {ev.older_versions_fired} fire(s) of earlier versions, not counted)")


def evidence(rule_id: str, since: SinceOption = None, as_json: JsonFlag = False) -> None:
    """A rule's recorded would-have-fired calls (while in shadow) joined with their outcomes."""
    from clearance.cli import _engine

    with _engine() as engine:
        ev = engine.rule_evidence(rule_id, since=parse_since(since, engine.clock()))
    if as_json:
        render.emit_json(ev)
    else:
        _show_evidence(ev)


def promote(
    rule_id: str,
    force: Annotated[bool, typer.Option("--force", help="Promote even without evidence.")] = False,
    min_outcomes: Annotated[int, typer.Option(help="Calls with outcomes needed as evidence.", min=1)] = 1,
    by: Annotated[Optional[str], typer.Option("--by", help="Who does this (recorded in the audit trail).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Turn a shadow rule on, after showing its evidence (precision, friction); refused without
    evidence unless --force."""
    from clearance.cli import _engine, _who

    with _engine() as engine:
        ev = engine.rule_evidence(rule_id)
        if not as_json:
            _show_evidence(ev)
        done: Any = engine.promote_rule(rule_id, force=force, min_outcomes=min_outcomes, applied_by=_who(by))
    if as_json:
        render.emit_json(done)
    else:
        forced = " (forced, without evidence)" if done.forced else ""
        render.out.print(f"[green]promoted[/] rule {render.safe(rule_id)}: active from policy version {done.policy_version}{forced}")


def register(app: typer.Typer, rules_app: typer.Typer) -> None:
    """Add these commands to the CLI (the one hook in ``clearance.cli``)."""
    app.command("backtest")(backtest)
    rules_app.command("evidence")(evidence)
    rules_app.command("promote")(promote)
