"""How the CLI shows things to people (Rich) and to machines (JSON on stdout)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_COLOURS = {
    "allowed": "green", "approved": "green", "executed": "green", "succeeded": "green",
    "blocked": "red", "rejected": "red", "failed": "red", "harmful": "red",
    "requires_approval": "yellow", "pending": "yellow", "unknown": "yellow",
    "expired": "dim", "reverted": "magenta",
}  # fmt: skip


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe(value: Any) -> str:
    """Text an agent, a model or a caller wrote, made harmless to show a person: control
    characters (terminal escape sequences among them) spelled out as ``\x1b``, and Rich markup
    escaped, so a call can never print itself in another colour or as another name."""
    return escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)))


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
    out.print(f"{badge(d.result.value)}  {safe(d.reason)}")
    out.print(f"  request_id  {d.request_id}")
    out.print(f"  tool        {safe(d.tool)}   actor {safe(d.actor)}   domain {safe(d.domain)}")
    out.print(f"  risk_score  {d.risk_score:.2f}   policy_version {d.policy_version}")
    for m in d.matched_rules:
        out.print(f"  rule        {safe(m.rule_id)} v{m.rule_version} ({safe(m.limit)}): {safe(m.reason)}")
    for m in d.shadow_rules:
        out.print(f"  [dim]shadow      {safe(m.rule_id)} would {m.effect.replace('_', ' ')}: {safe(m.reason)}[/]")
    if d.approval_id:
        out.print(f"  approval    {d.approval_id} (expires {when(d.approval_expires_at)})")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows as a table that fits the console, wrapping at spaces but never inside a word (an id
    stays whole, to copy), or, where that cannot fit (a narrow terminal, many columns), as one
    block of ``header: value`` lines per row, which wrap like any text. Nothing is ever cut to
    ``sta…``. Output that is not a terminal gets ``COLUMNS`` or 80 columns, by the same rules."""
    plain = [[Text.from_markup(cell).plain for cell in (h, *col)] for h, *col in zip(headers, *rows)]
    least = [max(len(w) for cell in col for w in cell.split() or [""]) for col in plain]  # the longest word
    most = [max(len(line) for cell in col for line in cell.splitlines() or [""]) for col in plain]
    room = out.width - 3 * len(headers) - 1  # each column's padding and border
    if sum(least) <= room:
        spare = max(room - sum(least), 0)
        want = [m - lo for m, lo in zip(most, least)]
        widths = most if sum(most) <= room else [lo + spare * w // max(sum(want), 1) for lo, w in zip(least, want)]
        grid = Table(*headers)
        for column, width in zip(grid.columns, widths):
            column.width, column.overflow = width, "fold"
        for row in rows:
            grid.add_row(*row)
        out.print(grid)
        return
    for n, row in enumerate(rows):
        if n:
            out.print()
        record = Table.grid(padding=(0, 2))
        record.add_column(no_wrap=True)
        record.add_column(overflow="fold")
        for header, cell in zip(headers, row):
            record.add_row(header, cell)
        out.print(record)


def approvals(items: Sequence[Any]) -> None:
    if not items:
        out.print("no approvals")
        return
    table(("approval_id", "status", "tool", "actor", "value", "expires", "reason"),
          [(a.approval_id, badge(a.status.value), safe(a.tool), safe(a.actor), "-" if a.value is None else f"{a.value:,.2f}",
            when(a.expires_at), safe(a.reason)) for a in items])  # fmt: skip


def approval(a: Any) -> None:
    out.print(f"{badge(a.status.value)}  approval {a.approval_id} for {a.request_id}")
    out.print(f"  {safe(a.tool)} by {safe(a.actor)} in {safe(a.domain)}: {safe(a.reason)}")
    out.print(f"  arguments   {safe(json.dumps(a.arguments, default=str))}")
    out.print(f"  policy      {a.policy_version}   needs {a.approvals_required} approval(s)")
    out.print(f"  created     {when(a.created_at)}   expires {when(a.expires_at)}")
    for v in a.votes:
        note = f": {safe(v.comment)}" if v.comment else ""
        out.print(f"  vote        {safe(v.approver)} {badge(v.resolution)} at {when(v.at)}{note}")
    if a.resolved_at:
        out.print(f"  resolved    {when(a.resolved_at)} by {safe(a.resolved_by or '-')}")
