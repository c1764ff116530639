"""``clearance demo``: a refund agent under governance, start to finish, offline by default.

The model's turns are scripted and served by :mod:`clearance.testing` on loopback, so the demo
needs no key; everything else is real: the OpenAI SDK, the engine, a SQLite file, the audit
chain. With ``live=True`` the same agent runs against the real API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from clearance.engine import Engine
from clearance.policy import parse_rules

RULES = """
version: 1
rules:
  - id: refunds
    domain: customer_transactions
    tool: refund_payment
    max_value: 2000
    require_approval_above: 500
    max_per_hour: 20
  - id: eur-only
    tool: refund_payment
    when: 'args.currency != "EUR"'
    effect: block
"""

PROMPT = (
    "Three customers asked for refunds today: order ord_1001 for 49.90 EUR, order ord_1002 for "
    "5,000 EUR and order ord_1003 for 750 EUR. Refund each one with the refund_payment tool, one at "
    "a time, then summarise what happened."
)

ACTOR, DOMAIN = "refund-agent", "customer_transactions"


def refund_payment(order_id: str, amount: float, currency: str = "EUR") -> dict[str, Any]:
    """Refund a customer's order.

    Args:
        order_id: The order to refund, like ord_1001.
        amount: How much to refund.
        currency: ISO currency code.
    """
    return {"refund_id": f"re_{order_id.removeprefix('ord_')}", "order_id": order_id, "amount": amount, "currency": currency}


def _script() -> list[Any]:
    from clearance.testing import turn

    return [
        turn.function_call("refund_payment", {"order_id": "ord_1001", "amount": 49.90, "currency": "EUR"}),
        turn.function_call("refund_payment", {"order_id": "ord_1002", "amount": 5000, "currency": "EUR"}),
        turn.function_call("refund_payment", {"order_id": "ord_1003", "amount": 750, "currency": "EUR"}),
        turn.text("Refunded ord_1001 (49.90 EUR) and, after a supervisor approved it, ord_1003 (750 EUR). "
                  "The 5,000 EUR refund for ord_1002 was blocked by policy: it exceeds the 2,000 EUR limit."),
    ]  # fmt: skip


def run_demo(db: str | Path = "clearance-demo.db", *, live: bool = False, model: str | None = None,
             console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the demo on a fresh store at ``db``; returns the final run result."""
    from clearance.adapters.openai import GuardedOpenAI

    out = console or Console(highlight=False)
    if "://" in str(db):
        raise ValueError(f"the demo recreates its store on each run, so it takes a SQLite file, not the URL {db}")
    path = Path(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = Engine(path)
    engine.apply_rules(parse_rules(RULES), applied_by="demo")
    out.print(Panel.fit(f"[bold]clearance demo[/]: a refund agent whose every tool call is decided first\n"
                        f"store: {path}  model: {'live ' + (model or 'gpt-4.1-mini') if live else 'scripted (offline)'}"))  # fmt: skip
    out.print("[bold]Rules[/] (refunds over 500 need a person, over 2,000 are blocked, EUR only)")

    server = None
    if live:
        if not os.environ.get("OPENAI_API_KEY"):
            raise RuntimeError("--live needs OPENAI_API_KEY in the environment")
        guard = GuardedOpenAI(actor=ACTOR, domain=DOMAIN, engine=engine, on_decision=lambda e: _show(out, e))
    else:
        from clearance.testing import ScriptedOpenAI

        server = ScriptedOpenAI(_script()).start()
        guard = GuardedOpenAI(openai_api_key="demo", base_url=server.base_url, actor=ACTOR, domain=DOMAIN,
                              engine=engine, on_decision=lambda e: _show(out, e))  # fmt: skip
    guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"], target_from_args=lambda a: a["order_id"])
    try:
        out.print(f"\n[bold]User[/]: {PROMPT}\n")
        result = guard.run(messages=[{"role": "user", "content": PROMPT}], model=model or "gpt-4.1-mini")
        while result["status"] == "approval_required":
            for pending in result["pending_approvals"]:
                out.print(f"\n[yellow]waiting[/] approval {pending['approval_id']} for {pending['tool']} "
                          f"{pending['arguments']}: {pending['reason']}")  # fmt: skip
                engine.resolve_approval(pending["approval_id"], "approved", approver="supervisor@example.com",
                                        comment="customer verified by phone")  # fmt: skip
                out.print("[green]approved[/] by supervisor@example.com; resuming the run from the store\n")
                result = guard.resume_after_approval(pending["approval_id"])
                break
        out.print(f"\n[bold]Assistant[/]: {result['output_text']}\n")
        executed = [e for e in result["execution"]["events"] if e["status"] == "executed"]
        if executed:
            first = executed[0]
            engine.report_outcome(first["request_id"], "succeeded", description="customer confirmed the refund arrived",
                                  reported_by="billing", event_id=f"billing-{first['request_id']}")  # fmt: skip
            out.print(f"[bold]Outcome[/] reported for {first['request_id']}: [green]succeeded[/] "
                      "(future similar refunds are judged with it)")  # fmt: skip
        report = engine.verify_audit()
        state = "[green]intact[/]" if report.ok else f"[red]broken at {report.first_broken_seq}[/]"
        out.print(f"[bold]Audit[/]: {report.events_checked} events, hash chain {state}")
        out.print(f"\nInspect it: clearance --db {path} audit list   |   clearance --db {path} approvals list --all")
        return result
    finally:
        guard.close()
        if server is not None:
            server.stop()
        engine.close()


def _show(out: Console, event: dict[str, Any]) -> None:
    colour = {"executed": "green", "blocked": "red", "approval_required": "yellow", "rejected": "red"}.get(event["status"], "white")
    args = ", ".join(f"{k}={v}" for k, v in (event.get("arguments") or {}).items()) if isinstance(event.get("arguments"), dict) else event.get("arguments")
    out.print(f"[bold {colour}]{event['status']:>17}[/]  {event['tool']}({args})")
    why = f"approved by {event['approved_by']} after: {event['decision']['reason']}" if event.get("approved_by") else event["decision"]["reason"]
    out.print(f"{'':>19}{why}")
