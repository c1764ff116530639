"""``clearance store prune`` and ``clearance memory snapshot``: an operator's storage commands."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from clearance.cli import render

store_app = typer.Typer(help="Keep the store's size in check (retention).", no_args_is_help=True)
memory_app = typer.Typer(help="Memory's snapshot beside the store (what makes restarts fast).", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]


def _date(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date: use YYYY-MM-DD or an ISO 8601 time", param_hint="--before") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


@store_app.command("prune")
def prune(
    before: Annotated[str, typer.Option("--before", help="Archive and delete what was written before this date "
                      "(YYYY-MM-DD, UTC, or an ISO 8601 time); at least a day ago.")],
    archive: Annotated[Optional[str], typer.Option("--archive", help="The archive to write (gzip JSON lines; default: "
                       "beside a SQLite store, named after the cut). Never overwritten.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Archive old decisions, their events and outcomes to a compressed file and delete them;
    the audit chain keeps a cut from which `clearance audit verify` proves the rest."""
    from clearance.cli import _engine

    when = _date(before)
    with _engine() as engine:
        try:
            report = engine.prune(when, archive=archive)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    if as_json:
        render.emit_json(report.as_dict())
    elif report.archive is None:
        render.out.print(f"nothing to prune before {when.isoformat()} (the chain starts after event {report.cut_seq})")
    else:
        n = report.deleted.get("decisions", 0)
        render.out.print(f"pruned {n} decisions and {report.deleted.get('events', 0)} events up to event {report.cut_seq}; "
                         f"archive {report.archive} (sha256 {report.archive_sha256})")  # fmt: skip


@memory_app.command("snapshot")
def snapshot(as_json: JsonFlag = False) -> None:
    """Bring memory up to date with the store and save its snapshot (a server does this on its own)."""
    from clearance.cli import _engine

    with _engine() as engine:
        engine.warm_memory()
        info = engine.save_memory_snapshot()
        where = str(engine.snapshots.place)
    if as_json:
        render.emit_json({**info.as_dict(), "place": where})
    elif info.status == "saved":
        render.out.print(f"memory snapshot saved at event {info.seq} ({info.bytes:,} bytes) to {where}")
    else:
        render.out.print(f"no snapshot: this engine's memory keeps none ({info.status})")
