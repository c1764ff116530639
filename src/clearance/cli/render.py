"""How the CLI shows things to people (Rich) and to machines (JSON on stdout)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_COLOURS = {
    "allowed": "green", "approved": "green", "executed": "green", "succeeded": "green",
    "blocked": "red", "rejected": "red", "failed": "red", "harmful": "red",
    "requires_approval": "yellow", "pending": "yellow", "unknown": "yellow",
    "expired": "dim", "reverted": "magenta",
}  # fmt: skip


def emit_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    print(json.dumps(value, indent=2, default=str))


def badge(word: str) -> str:
    colour = _COLOURS.get(word, "white")
    return f"[bold {colour}]{word}[/]"


def when(ts: datetime | None) -> str:
    return "-" if ts is None else f"{ts:%Y-%m-%d %H:%M:%S} UTC"


def decision(d: Any) -> None:
    out.print(f"{badge(d.result.value)}  {d.reason}")
    out.print(f"  request_id  {d.request_id}")
    out.print(f"  tool        {d.tool}   actor {d.actor}   domain {d.domain}")
    out.print(f"  risk_score  {d.risk_score:.2f}   policy_version {d.policy_version}")
    for m in d.matched_rules:
        out.print(f"  rule        {m.rule_id} v{m.rule_version} ({m.limit}): {m.reason}")
    for m in d.shadow_rules:
        out.print(f"  [dim]shadow      {m.rule_id} would {m.effect.replace('_', ' ')}: {m.reason}[/]")
    if d.approval_id:
        out.print(f"  approval    {d.approval_id} (expires {when(d.approval_expires_at)})")


def approvals(items: Sequence[Any]) -> None:
    if not items:
        out.print("no approvals")
        return
    table = Table("approval_id", "status", "tool", "actor", "value", "expires", "reason")
    table.columns[0].no_wrap = True
    for a in items:
        value = "-" if a.value is None else f"{a.value:,.2f}"
        table.add_row(a.approval_id, badge(a.status.value), a.tool, a.actor, value, when(a.expires_at), a.reason)
    out.print(table)


def approval(a: Any) -> None:
    out.print(f"{badge(a.status.value)}  approval {a.approval_id} for {a.request_id}")
    out.print(f"  {a.tool} by {a.actor} in {a.domain}: {a.reason}")
    out.print(f"  arguments   {json.dumps(a.arguments, default=str)}")
    out.print(f"  policy      {a.policy_version}   needs {a.approvals_required} approval(s)")
    out.print(f"  created     {when(a.created_at)}   expires {when(a.expires_at)}")
    for v in a.votes:
        note = f": {v.comment}" if v.comment else ""
        out.print(f"  vote        {v.approver} {badge(v.resolution)} at {when(v.at)}{note}")
    if a.resolved_at:
        out.print(f"  resolved    {when(a.resolved_at)} by {a.resolved_by or '-'}")
