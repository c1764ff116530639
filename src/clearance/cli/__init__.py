"""The ``clearance`` command line.

Exit codes let shell scripts and CI gate on a decision: ``check`` exits 0 when allowed, 3 when
blocked, 4 when approval is required; 1 is any refused operation, 2 a usage error. Failures
are one or two lines on stderr, never a traceback (``--debug`` shows it): see ``failures``.
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
from clearance.cli.admin import db_app, init
from clearance.cli.audit import audit_app
from clearance.cli.failures import FailingClearly, Refusal, settings
from clearance.cli.store import memory_app, store_app
from clearance.cli.learning import explain, learning_app
from clearance.cli.mcp import mcp_app
from clearance.cli.step import step_app
from clearance.engine import Engine
from clearance.model import Action, ApprovalStatus, DecisionResult, OutcomeStatus
from clearance.policy import load_rules, rules_json_schema

__all__ = ["app", "main"]

EXIT_BY_RESULT = {DecisionResult.allowed: 0, DecisionResult.blocked: 3, DecisionResult.requires_approval: 4}

app = typer.Typer(
    help="Decide AI-agent tool calls before they run: rules, approvals, outcomes, kill switch and audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=FailingClearly,
)
rules_app = typer.Typer(help="Validate, apply and inspect rules.", no_args_is_help=True)
approvals_app = typer.Typer(help="List and resolve approval requests.", no_args_is_help=True)
outcomes_app = typer.Typer(help="Report what really happened after a call.", no_args_is_help=True)
kill_app = typer.Typer(help="Block everything, or one domain, tool or actor, at once.", no_args_is_help=True)
decisions_app = typer.Typer(help="Look up recorded decisions.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the control-plane server (clearance serve).", no_args_is_help=True)
for sub, name in ((rules_app, "rules"), (approvals_app, "approvals"), (outcomes_app, "outcomes"),
                  (kill_app, "kill-switch"), (audit_app, "audit"), (decisions_app, "decisions"), (keys_app, "keys")):  # fmt: skip
    app.add_typer(sub, name=name)
app.add_typer(step_app, name="step")
app.add_typer(learning_app, name="learning")
app.add_typer(db_app, name="db")
app.add_typer(mcp_app, name="mcp")
app.add_typer(store_app, name="store")
app.add_typer(memory_app, name="memory")
app.command("explain")(explain)
app.command("init")(init)
backtest.register(app, rules_app)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]
ByOption = Annotated[Optional[str], typer.Option("--by", help="Who does this (recorded in the audit trail).")]


state = settings  # --db, --create and --debug of this invocation (clearance.cli.failures)


def _print_version(value: bool) -> None:
    if value:
        print(f"clearance {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    db: Annotated[
        Optional[str],
        typer.Option("--db", envvar="CLEARANCE_DB", help="SQLite file or database URL (postgresql://USER@HOST/DB). "
                     "Default ./clearance.db."),
    ] = None,
    create: Annotated[bool, typer.Option("--create", help="Create the store (and its folders) if it does not exist; "
                      "commands that only read never do otherwise.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    state.db, state.create, state.debug = db, create, debug


def _engine(*, reading: bool = False, quiet: bool = False, **kw: Any) -> Engine:
    """The engine on the store of ``--db``, checked first (:func:`store_access.prepare`): a
    command that only reads (``reading``) never creates one; one that does says so on stderr
    unless ``quiet`` (``step stream``, whose stderr begins with its ready line)."""
    from clearance.cli.store_access import prepare

    where = prepare(state.db, reading=reading, create=state.create)
    new = where.path is not None and not where.path.exists()
    engine = Engine(where.location, **kw)
    if new and not quiet:  # said, so that a mistyped --db of a writing command does not go unnoticed
        render.err.print(f"note: created a new store at {render.safe(where.path)}")
    return engine


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
def rules_apply(
    file: Path,
    by: ByOption = None,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Apply it even though it removes every rule in force.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make a rules file the policy (a new version when anything changed)."""
    source = load_rules(file)  # a file that does not load is refused before the store is opened
    with _engine() as engine:
        if not source.rules and not allow_empty and (in_force := len(engine.current_rules().rules)):
            raise Refusal(f"{file} has no rules: applying it would remove all {in_force} rule(s) in force; "
                          f"pass --allow-empty to do that")  # fmt: skip
        info = engine.apply_rules(source, applied_by=_who(by))
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
    with _engine(reading=True) as engine:
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
    with _engine(reading=True) as engine:
        items = engine.list_approvals(None if all_ else status, limit=limit)
    render.emit_json(items) if as_json else render.approvals(items)


@approvals_app.command("show")
def approvals_show(approval_id: str, as_json: JsonFlag = False) -> None:
    """Show one approval request with its votes."""
    with _engine(reading=True) as engine:
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
    with _engine(reading=True) as engine:
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


# -- decisions -----------------------------------------------------------------------------
@decisions_app.command("show")
def decisions_show(request_id: str, as_json: JsonFlag = False) -> None:
    """Show a recorded decision, its execution and outcomes."""
    with _engine(reading=True) as engine:
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
    anchor_key: Annotated[Optional[Path], typer.Option("--anchor-key", envvar="CLEARANCE_ANCHOR_KEY", help="Private key "
                          "that signs audit checkpoints (clearance audit keygen; default: CLEARANCE_ANCHOR_KEY).")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", envvar="CLEARANCE_CHECKPOINT_EVERY", min=0,
                                help="Sign the audit chain's head every N events (needs --anchor-key; 0: only on "
                                "demand, POST /v1/audit/checkpoints).")] = 0,
    warmup: Annotated[Optional[str], typer.Option("--warmup", help="wait: accept connections once memory is loaded "
                      "(from its snapshot, else rebuilt from the audit log), with progress lines; rules: answer at once, "
                      "by rules alone until memory is ready (default: CLEARANCE_MEMORY_WARMUP, else wait).")] = None,
    snapshot_seconds: Annotated[Optional[float], typer.Option("--snapshot-seconds", help="Save memory's snapshot beside "
                                "the store this often and at shutdown (0: at shutdown only; negative: never; default: "
                                "CLEARANCE_MEMORY_SNAPSHOT_SECONDS, else 600).")] = None,
    retention_days: Annotated[Optional[float], typer.Option("--retention-days", help="Every hour, archive and delete "
                              "what is older than this many days (clearance store prune; default: "
                              "CLEARANCE_RETENTION_DAYS, else keep everything).")] = None,
    archive_dir: Annotated[Optional[str], typer.Option("--archive-dir", help="Where retention's archives go (default: "
                           "CLEARANCE_ARCHIVE_DIR, else beside a SQLite store).")] = None,
) -> None:
    """Run the control-plane server (HTTP API under /v1, OpenAPI at /v1/openapi.json) on this store."""
    if metrics_key:
        os.environ["CLEARANCE_METRICS_KEY"] = metrics_key  # every worker process reads it
    if checkpoint_every and anchor_key is None:
        raise typer.BadParameter("--checkpoint-every needs --anchor-key to sign with", param_hint="--anchor-key")
    if anchor_key is not None:
        from clearance.engine.anchor import load_private_key

        load_private_key(anchor_key)  # a bad key fails here, before serving
        os.environ["CLEARANCE_ANCHOR_KEY"] = str(anchor_key.expanduser().resolve())  # every worker process reads them
        os.environ["CLEARANCE_CHECKPOINT_EVERY"] = str(checkpoint_every)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        from clearance.server.runner import serve as run_server
    except ImportError as exc:
        raise Refusal(f"the server needs its extra: pip install 'clearance[server]' ({exc.name} is missing)") from None
    from clearance.cli.store_access import prepare

    where = prepare(state.db, reading=False, create=state.create)
    try:
        from clearance.server.webhooks import WebhookSettings

        WebhookSettings.resolve(webhook_url or (), webhook_secret)
        from clearance.server.warmup import MemorySettings

        memory = MemorySettings.resolve(warmup, snapshot_seconds)
        from clearance.server.retention import RetentionSettings

        retention = RetentionSettings.resolve(retention_days, archive_dir)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run_server(where.location, host=host, port=port, max_body_bytes=max_body_bytes, log_level=log_level, json_logs=json_logs,
               workers=workers, webhook_urls=webhook_url or (), webhook_secret=webhook_secret, memory=memory,
               retention=retention)  # fmt: skip


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
    with _engine(reading=True) as engine:
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
    demo_db: Annotated[str, typer.Option("--demo-db", help="SQLite file for the demo; recreated on each run.")] = "clearance-demo.db",
) -> None:
    """A refund agent under governance: allowed, blocked, approved after waiting, outcome, audit. Offline by default."""
    from clearance.demo import run_demo

    run_demo(demo_db, live=live, model=model, console=render.out)


def main() -> None:
    """Entry point: failures print one or two lines to stderr and exit 1 (the root group,
    :class:`FailingClearly`), usage errors exit 2, never a traceback unless ``--debug``."""
    app()  # standalone mode: click exits with 2 on usage errors and with each Exit's code
