"""What a person sees when a command fails: one or two lines, never a traceback.

Every command runs inside :class:`FailingClearly` (the root group): whatever it raises is
described here (:func:`describe`) and printed to stderr as ``error: ...``, with exit code 1.
Refusals of clearance itself (``ClearanceError``, ``ValueError``) print their own message; a
database that cannot be reached, a file that is not a store, a missing extra or credentials
are named with what to do. Anything else is a bug: it says so and points at ``--debug``,
which lets every exception through with its traceback.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import click
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from clearance.cli import render

__all__ = ["FailingClearly", "Refusal", "describe", "settings"]


class Refusal(Exception):
    """A command refuses on purpose; its message says what is wrong and what to do."""


class _Settings:
    debug: bool = False
    create: bool = False
    db: str | None = None


#: Set by the root callback: ``--debug`` and ``--db`` of this invocation.
settings = _Settings()


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _database(exc: Any) -> str | None:
    """A SQLAlchemy or driver error on the store, in words."""
    from clearance.cli.store_access import target

    orig = getattr(exc, "orig", None) or exc
    where = target(settings.db)
    if isinstance(orig, sqlite3.Error):
        text = str(orig)
        name = where.shown
        if "readonly" in text or "read-only" in text:
            return f"the store {name} is read-only: make the file and its folder writable"
        if "not a database" in text or "malformed" in text:
            return f"{name} is not a clearance store (not a SQLite database, or a damaged one): check --db"
        if "unable to open" in text:
            return f"cannot open the store {name}: check that the path and its folder exist and are writable"
        if "locked" in text or "busy" in text:
            return f"the store {name} is locked by another process: try again when it has finished"
        return f"the store {name} failed: {_first_line(text)}"
    module = type(orig).__module__
    if module.startswith("psycopg"):
        text = _first_line(orig)
        if "connection" in text.lower() or "connect" in text.lower() or "server" in text.lower():
            return (f"cannot reach the database {where.shown}: {text}\n"
                    f"start PostgreSQL, or check the host, port and database name in --db")  # fmt: skip
        return f"the database {where.shown} failed: {text}"
    return None


def describe(exc: BaseException) -> str:
    """One or two lines for ``exc``: what is wrong and, where it helps, what to do."""
    from sqlalchemy import exc as sa_exc

    from clearance.cli.store_access import target
    from clearance.errors import ClearanceError

    if isinstance(exc, Refusal):
        return str(exc)
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return f"unknown database kind in --db {target(settings.db).shown}: give a SQLite file path or postgresql://..."
    if isinstance(exc, (sa_exc.DBAPIError, sqlite3.Error)):
        said = _database(exc)
        if said is not None:
            return said
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        extra = {"psycopg": "postgres", "psycopg2": "postgres", "uvicorn": "server", "fastapi": "server",
                 "prometheus_client": "server", "httptools": "server"}.get(exc.name.split(".")[0])  # fmt: skip
        if extra:
            return f"{exc.name} is not installed: pip install 'clearance[{extra}]'"
        return f"{exc.name} is not installed"
    if type(exc).__module__.startswith("openai") and ("credentials" in str(exc).lower() or "api_key" in str(exc)):
        return "no OpenAI credentials: set OPENAI_API_KEY (AZURE_OPENAI_API_KEY for Azure OpenAI) in the environment"
    if isinstance(exc, (ClearanceError, ValueError)):
        return str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError) and exc.filename:
        return f"permission denied: {exc.filename}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}"
    return f"unexpected {type(exc).__name__}: {_first_line(exc)} (this is a bug; run with --debug for the traceback)"


class FailingClearly(TyperGroup):
    """The root group: runs a command, and turns what it raises into :func:`describe`'s lines."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException, click.exceptions.Exit, click.exceptions.Abort, click.ClickException,
                KeyboardInterrupt):  # fmt: skip
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends as a message, unless --debug
            if settings.debug:
                raise
            render.err.print(f"[bold red]error:[/] {render.escape(describe(exc))}")
            raise typer.Exit(1) from None
