"""The ``clearance`` command line.

Exit codes let shell scripts and CI gate on a decision: ``check`` exits 0 when allowed, 3 when
blocked, 4 when approval is required; 1 is any refused operation, 2 a usage error.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError

from clearance import __version__
from clearance.cli import backtest, render
from clearance.cli.learning import explain, learning_app
from clearance.cli.step import step_app
from clearance.engine import Engine
from clearance.errors import ClearanceError
from clearance.model import Action, ApprovalStatus, DecisionResult, OutcomeStatus
from clearance.policy import load_rules, rules_json_schema

__all__ = ["app", "main"]

EXIT_BY_RESULT = {DecisionResult.allowed: 0, DecisionResult.blocked: 3, DecisionResult.requires_approval: 4}

app = typer.Typer(
    help="Decide AI-agent tool calls before they run: rules, approvals, outcomes, kill switch and audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
rules_app = typer.Typer(help="Validate, apply and inspect rules.", no_args_is_help=True)
approvals_app = typer.Typer(help="List and resolve approval requests.", no_args_is_help=True)
outcomes_app = typer.Typer(help="Report what really happened after a call.", no_args_is_help=True)
kill_app = typer.Typer(help="Block everything, or one domain, tool or actor, at once.", no_args_is_help=True)
audit_app = typer.Typer(help="Read and verify the audit trail.", no_args_is_help=True)
decisions_app = typer.Typer(help="Look up recorded decisions.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the control-plane server (clearance serve).", no_args_is_help=True)
for sub, name in ((rules_app, "rules"), (approvals_app, "approvals"), (outcomes_app, "outcomes"),
                  (kill_app, "kill-switch"), (audit_app, "audit"), (decisions_app, "decisions"), (keys_app, "keys")):  # fmt: skip
    app.add_typer(sub, name=name)
app.add_typer(step_app, name="step")
app.add_typer(learning_app, name="learning")
app.command("explain")(explain)
backtest.register(app, rules_app)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]
ByOption = Annotated[Optional[str], typer.Option("--by", help="Who does this (recorded in the audit trail).")]


class _State:
    db: Optional[str] = None


state = _State()


@app.callback()
def _root(
    db: Annotated[
        Optional[str],
        typer.Option("--db", envvar="CLEARANCE_DB", help="SQLite file or database URL. Default ./clearance.db."),
    ] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(f"clearance {__version__}")
        raise typer.Exit()
    state.db = db


def _engine(**kw: Any) -> Engine:
    return Engine(state.db, **kw)


def _who(by: Optional[str]) -> str:
    if by:
        return by
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def _json_option(value: Optional[str], name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON ({exc.msg} at column {exc.colno})", param_hint=name) from None


@app.command()
def check(
    tool: Annotated[Optional[str], typer.Option(help="Tool name.")] = None,
    args: Annotated[Optional[str], typer.Option("--args", help="Tool arguments as a JSON object.")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Who makes the call.")] = None,
    domain: Annotated[Optional[str], typer.Option(help="Business domain.")] = None,
    value: Annotated[Optional[float], typer.Option(help="Money or units at stake.")] = None,
    target: Annotated[Optional[str], typer.Option(help="What the call acts on.")] = None,
    context: Annotated[Optional[str], typer.Option(help="Free context as a JSON object.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="An Action as a JSON file ('-' for stdin); flags override it.")] = None,
    rules: Annotated[Optional[Path], typer.Option("--rules", help="Judge with this rules file instead of the applied policy.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Decide one action and record the decision. Exit 0 allowed, 3 blocked, 4 approval required."""
    data: dict[str, Any] = {}
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else _read(file)
        loaded = _json_option(text, "--file")
        if not isinstance(loaded, dict):
            raise typer.BadParameter("expected a JSON object", param_hint="--file")
        data.update(loaded)
    parsed_args = _json_option(args, "--args")
    parsed_ctx = _json_option(context, "--context")
    for key, val in (("tool", tool), ("arguments", parsed_args), ("actor", actor), ("domain", domain),
                     ("value", value), ("target", target), ("context", parsed_ctx)):  # fmt: skip
        if val is not None:
            data[key] = val
    if "tool" not in data:
        raise typer.BadParameter("give --tool, or a --file with a tool", param_hint="--tool")
    try:
        action = Action.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems, param_hint="action") from None
    with _engine(rules=rules) as engine:
        decision = engine.evaluate(action)
    if as_json:
        render.emit_json(decision)
    else:
        render.decision(decision)
    raise typer.Exit(EXIT_BY_RESULT[decision.result])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None


# -- rules ---------------------------------------------------------------------------------
@rules_app.command("validate")
def rules_validate(file: Path, as_json: JsonFlag = False) -> None:
    """Check a rules file without applying it."""
    source = load_rules(file)
    if as_json:
        render.emit_json({"valid": True, "rules": [r.id for r in source.rules]})
    else:
        render.out.print(f"[green]valid[/]: {len(source.rules)} rule(s) in {file}: {', '.join(r.id for r in source.rules)}")


@rules_app.command("apply")
def rules_apply(file: Path, by: ByOption = None, as_json: JsonFlag = False) -> None:
    """Make a rules file the policy (a new version when anything changed)."""
    with _engine() as engine:
        info = engine.apply_rules(file, applied_by=_who(by))
    if as_json:
        render.emit_json(info.__dict__)
    elif info.unchanged:
        render.out.print(f"unchanged: policy version {info.version} already has these rules")
    else:
        parts = [f"{k} {', '.join(v)}" for k, v in (("added", info.added), ("changed", info.changed), ("removed", info.removed)) if v]
        render.out.print(f"[green]applied[/] policy version {info.version}" + (f": {'; '.join(parts)}" if parts else ""))


@rules_app.command("show")
def rules_show(as_json: JsonFlag = False) -> None:
    """Show the rules in force."""
    with _engine() as engine:
        ruleset = engine.current_rules()
    doc = ruleset.source.model_dump(mode="json", exclude_none=True)
    if as_json:
        render.emit_json({"policy_version": ruleset.policy_version, **doc})
        return
    render.out.print(f"policy version {ruleset.policy_version}: {len(ruleset.rules)} rule(s)")
    for r in ruleset.rules:
        fields = {k: v for k, v in r.rule.model_dump(mode="json", exclude_none=True).items() if k != "id"}
        render.out.print(f"  [bold]{r.id}[/] v{r.version}  {json.dumps(fields)}")


@rules_app.command("schema")
def rules_schema() -> None:
    """Print the JSON Schema of the rules file (for editors and CI)."""
    render.emit_json(rules_json_schema())


# -- approvals -----------------------------------------------------------------------------
@approvals_app.command("list")
def approvals_list(
    status: Annotated[Optional[ApprovalStatus], typer.Option(help="Only this status.")] = ApprovalStatus.pending,
    all_: Annotated[bool, typer.Option("--all", help="Every status.")] = False,
    limit: int = 100,
    as_json: JsonFlag = False,
) -> None:
    """List approval requests, pending ones by default."""
    with _engine() as engine:
        items = engine.list_approvals(None if all_ else status, limit=limit)
    render.emit_json(items) if as_json else render.approvals(items)


@approvals_app.command("show")
def approvals_show(approval_id: str, as_json: JsonFlag = False) -> None:
    """Show one approval request with its votes."""
    with _engine() as engine:
        a = engine.get_approval(approval_id)
    render.emit_json(a) if as_json else render.approval(a)


def _resolve(approval_id: str, resolution: str, by: Optional[str], comment: Optional[str], as_json: bool) -> None:
    with _engine() as engine:
        a = engine.resolve_approval(approval_id, resolution, approver=_who(by), comment=comment)
    render.emit_json(a) if as_json else render.approval(a)


@approvals_app.command("approve")
def approvals_approve(approval_id: str, by: ByOption = None, comment: Optional[str] = None, as_json: JsonFlag = False) -> None:
    """Approve a pending request."""
    _resolve(approval_id, "approved", by, comment, as_json)


@approvals_app.command("reject")
def approvals_reject(approval_id: str, by: ByOption = None, comment: Optional[str] = None, as_json: JsonFlag = False) -> None:
    """Reject a pending request; the call will not run."""
    _resolve(approval_id, "rejected", by, comment, as_json)


# -- outcomes ------------------------------------------------------------------------------
@outcomes_app.command("report")
def outcomes_report(
    request_id: str,
    status: Annotated[OutcomeStatus, typer.Option(help="What happened.")],
    severity: Annotated[float, typer.Option(min=0.0, max=1.0, help="How bad, 0 to 1.")] = 0.0,
    cost: Annotated[float, typer.Option(min=0.0, help="What it cost.")] = 0.0,
    description: Optional[str] = None,
    observed_at: Annotated[Optional[datetime], typer.Option(help="When it was observed (ISO 8601, UTC if no offset).")] = None,
    by: ByOption = None,
    event_id: Annotated[Optional[str], typer.Option(help="Idempotency key: reporting it again changes nothing.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Link a real outcome to a decision."""
    if observed_at is not None and observed_at.tzinfo is None:
        from datetime import timezone

        observed_at = observed_at.replace(tzinfo=timezone.utc)
    with _engine() as engine:
        outcome = engine.report_outcome(request_id, status, severity=severity, cost=cost, description=description,
                                        observed_at=observed_at, reported_by=_who(by), event_id=event_id)  # fmt: skip
    if as_json:
        render.emit_json(outcome)
    else:
        render.out.print(f"recorded {render.badge(outcome.status.value)} for {request_id} (event {outcome.event_id})")


# -- kill switch ---------------------------------------------------------------------------
DomainScope = Annotated[Optional[str], typer.Option("--domain", help="Only this domain.")]
ToolScope = Annotated[Optional[str], typer.Option("--tool", help="Only this tool.")]
ActorScope = Annotated[Optional[str], typer.Option("--actor", help="Only this actor.")]


@kill_app.command("on")
def kill_on(
    domain: DomainScope = None,
    tool: ToolScope = None,
    actor: ActorScope = None,
    reason: Optional[str] = None,
    by: ByOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Block every matching call until switched off (no scope: everything)."""
    with _engine() as engine:
        sw = engine.activate_kill_switch(domain=domain, tool=tool, actor=actor, reason=reason, by=_who(by))
    what = "everything" if sw.scope == "all" else f"{sw.scope} {sw.value}"
    render.emit_json(sw) if as_json else render.out.print(f"[bold red]kill switch on[/] for {what}")


@kill_app.command("off")
def kill_off(
    domain: DomainScope = None,
    tool: ToolScope = None,
    actor: ActorScope = None,
    by: ByOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Lift a kill switch."""
    with _engine() as engine:
        was_on = engine.deactivate_kill_switch(domain=domain, tool=tool, actor=actor, by=_who(by))
    if as_json:
        render.emit_json({"deactivated": was_on})
    else:
        render.out.print("kill switch off" if was_on else "no such kill switch was on")


@kill_app.command("status")
def kill_status(as_json: JsonFlag = False) -> None:
    """Show active kill switches."""
    with _engine() as engine:
        switches = engine.kill_switches()
    if as_json:
        render.emit_json(switches)
    elif not switches:
        render.out.print("no kill switch is on")
    else:
        for sw in switches:
            what = "everything" if sw.scope == "all" else f"{sw.scope} {render.safe(sw.value)}"
            why = f": {render.safe(sw.reason)}" if sw.reason else ""
            render.out.print(f"[bold red]on[/] for {what}{why} (by {render.safe(sw.activated_by or '-')} at "
                             f"{render.when(sw.activated_at)})")  # fmt: skip


# -- audit ---------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Check the hash chain; exit 1 and name the first broken link if anything was altered."""
    with _engine() as engine:
        report = engine.verify_audit()
    if as_json:
        render.emit_json(report.as_dict())
    elif report.ok:
        render.out.print(f"[green]ok[/]: {report.events_checked} events, chain intact")
    else:
        render.err.print(f"[bold red]broken[/] at event {report.first_broken_seq}: {report.problem}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    request_id: Optional[str] = None,
    trace_id: Optional[str] = None,
    type: Annotated[Optional[str], typer.Option("--type", help="Event type, e.g. decision.made.")] = None,
    after: Annotated[int, typer.Option(help="Only events after this seq.")] = 0,
    limit: int = 50,
    as_json: JsonFlag = False,
) -> None:
    """List audit events, oldest first."""
    with _engine() as engine:
        events = engine.audit_events(request_id=request_id, trace_id=trace_id, type=type, after_seq=after, limit=limit)
    if as_json:
        render.emit_json(events)
        return
    for e in events:
        render.out.print(f"{e.seq:>6}  {render.when(e.created_at)}  {e.type:<24} {e.request_id or '-'}")


# -- decisions -----------------------------------------------------------------------------
@decisions_app.command("show")
def decisions_show(request_id: str, as_json: JsonFlag = False) -> None:
    """Show a recorded decision, its execution and outcomes."""
    with _engine() as engine:
        d = engine.get_decision(request_id)
        ex = engine.get_execution(request_id)
        outs = engine.outcomes(request_id)
    if as_json:
        render.emit_json({"decision": d.model_dump(mode="json"), "execution": ex.model_dump(mode="json") if ex else None,
                          "outcomes": [o.model_dump(mode="json") for o in outs]})  # fmt: skip
        return
    render.decision(d)
    render.out.print(f"  execution   {render.badge(ex.status.value) if ex else '-'}")
    for o in outs:
        render.out.print(f"  outcome     {render.badge(o.status.value)} severity {o.severity:.2f} cost {o.cost:,.2f} {render.safe(o.description or '')}")


# -- server and its keys -------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 above).")] = 1_000_000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    json_logs: Annotated[bool, typer.Option("--json-logs/--plain-logs", help="One JSON object per log line.")] = True,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port and the store.")] = 1,
    webhook_url: Annotated[Optional[list[str]], typer.Option("--webhook-url", help="POST approval events here (repeatable; "
                           "default: CLEARANCE_WEBHOOK_URLS, comma-separated).")] = None,
    webhook_secret: Annotated[Optional[str], typer.Option("--webhook-secret", help="Shared secret that signs webhooks: "
                              "whsec_<base64> or any string (default: CLEARANCE_WEBHOOK_SECRET, which keeps it out of the "
                              "process list).")] = None,
    metrics_key: Annotated[Optional[str], typer.Option("--metrics-key", help="Put /metrics behind this bearer token "
                           "(an admin API key works too; default: CLEARANCE_METRICS_KEY; none: /metrics is open).")] = None,
) -> None:
    """Run the control-plane server (HTTP API under /v1, OpenAPI at /v1/openapi.json) on this store."""
    if metrics_key:
        os.environ["CLEARANCE_METRICS_KEY"] = metrics_key  # every worker process reads it
    try:
        from clearance.server.runner import serve as run_server
    except ImportError as exc:
        raise typer.BadParameter(f"the server needs its extra: pip install 'clearance[server]' ({exc.name} is missing)") from None
    try:
        from clearance.server.webhooks import WebhookSettings

        WebhookSettings.resolve(webhook_url or (), webhook_secret)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run_server(state.db, host=host, port=port, max_body_bytes=max_body_bytes, log_level=log_level, json_logs=json_logs,
               workers=workers, webhook_urls=webhook_url or (), webhook_secret=webhook_secret)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key, e.g. the service that uses it.")],
    role: Annotated[str, typer.Option(help="agent, approver or admin.")] = "agent",
    identity: Annotated[Optional[str], typer.Option(help="The actor or person the key speaks for (default: the name).")] = None,
    by: ByOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key; its token is printed once and never stored."""
    with _engine() as engine:
        key, token = engine.keys.create(name, role, identity=identity, created_by=_who(by))
    if as_json:
        render.emit_json({**key.as_dict(), "token": token})
    else:
        render.out.print(f"created {key.role} key {key.key_id} for {key.identity}; the token is shown only now:")
        print(token)


@keys_app.command("list")
def keys_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List API keys (never their secrets)."""
    with _engine() as engine:
        items = engine.keys.list(include_revoked=all_)
    if as_json:
        render.emit_json([k.as_dict() for k in items])
        return
    if not items:
        render.out.print("no API keys")
    for k in items:
        revoked = f"  revoked {render.when(k.revoked_at)}" if k.revoked_at else ""
        render.out.print(f"{k.key_id}  {k.role:<8} {render.safe(k.identity):<24} {render.safe(k.name)}  "
                         f"created {render.when(k.created_at)}{revoked}")  # fmt: skip


@keys_app.command("revoke")
def keys_revoke(key_id: str, by: ByOption = None, as_json: JsonFlag = False) -> None:
    """Revoke an API key (servers refuse it within a second)."""
    with _engine() as engine:
        done = engine.keys.revoke(key_id, by=_who(by))
        known = engine.keys.get(key_id) is not None
    if not known:
        from clearance.errors import NotFound

        raise NotFound(f"no API key {key_id!r}")
    if as_json:
        render.emit_json({"key_id": key_id, "revoked": done})
    else:
        render.out.print(f"revoked {key_id}" if done else f"{key_id} was already revoked")


@app.command()
def demo(
    live: Annotated[bool, typer.Option("--live", help="Use the real OpenAI API (needs OPENAI_API_KEY).")] = False,
    model: Annotated[Optional[str], typer.Option(help="Model for --live (default gpt-4.1-mini).")] = None,
    demo_db: Annotated[Path, typer.Option("--demo-db", help="Store for the demo; recreated on each run.")] = Path("clearance-demo.db"),
) -> None:
    """A refund agent under governance: allowed, blocked, approved after waiting, outcome, audit. Offline by default."""
    from clearance.demo import run_demo

    run_demo(demo_db, live=live, model=model, console=render.out)


def main() -> None:
    """Entry point: refused operations print one line to stderr and exit 1, never a traceback."""
    try:
        app()  # standalone mode: click exits with 2 on usage errors and with each Exit's code
    except (ClearanceError, ValueError) as exc:
        render.err.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
