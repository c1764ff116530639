"""``clearance init`` and ``clearance db status|upgrade``: the store made and moved on purpose.

Other commands never create a store they were only asked to read, and a server never migrates
one (see ``clearance.engine.schema``): these are the deliberate steps.
"""

from __future__ import annotations

from typing import Annotated

import typer

from clearance.cli import render
from clearance.cli.failures import settings
from clearance.cli.store_access import prepare

db_app = typer.Typer(help="The store's schema: where it is, and upgrading it after installing a new release.",
                     no_args_is_help=True)  # fmt: skip

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]


def init(as_json: JsonFlag = False) -> None:
    """Create the store (a SQLite file, its folders too, or the schema in an empty PostgreSQL database)."""
    from clearance.engine.schema import schema_status, upgrade_schema

    where = prepare(settings.db, reading=False, create=True)
    existed = where.path.exists() if where.path is not None else not schema_status(where.location).empty
    before, after = upgrade_schema(where.location)
    if as_json:
        render.emit_json({**after.as_dict(), "created": not existed, "upgraded_from": before.current
                          if existed and before.current != after.current else None})  # fmt: skip
    elif not existed:
        render.out.print(f"created the store {render.safe(after.location)} (schema {after.current})")
    elif before.current != after.current:
        render.out.print(f"the store {render.safe(after.location)} existed; upgraded its schema {before.current} -> {after.current}")
    else:
        render.out.print(f"the store {render.safe(after.location)} exists already (schema {after.current}); nothing to do")


@db_app.command("status")
def db_status(as_json: JsonFlag = False) -> None:
    """Show the store's schema revision and the one this release needs. Exit 1 when they differ."""
    from clearance.engine.schema import schema_status

    where = prepare(settings.db, reading=True, create=False)
    status = schema_status(where.location)
    if as_json:
        render.emit_json(status.as_dict())
    elif status.up_to_date:
        render.out.print(f"[green]up to date[/]: {render.safe(status.location)} has schema {status.current}")
    else:
        render.out.print(f"[yellow]behind[/]: {render.safe(status.location)} has schema {status.current or 'none'}; "
                         f"this release needs {status.head}: run `clearance db upgrade`")  # fmt: skip
    if not status.up_to_date:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonFlag = False) -> None:
    """Bring the store's schema to this release (back it up first). Safe to run twice, and from
    several machines at once: migrations take the database's lock."""
    from clearance.engine.schema import upgrade_schema

    where = prepare(settings.db, reading=True, create=False)
    before, after = upgrade_schema(where.location)
    if as_json:
        render.emit_json({**after.as_dict(), "from": before.current, "to": after.current})
    elif before.current == after.current:
        render.out.print(f"up to date: {render.safe(after.location)} has schema {after.current}")
    else:
        render.out.print(f"[green]upgraded[/] {render.safe(after.location)}: schema {before.current or 'none'} -> {after.current}")


__all__ = ["db_app", "init"]
