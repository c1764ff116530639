"""Where the command line's store is, checked before anything opens it.

A mistyped ``--db`` used to create a fresh empty store (and its folders), on which ``audit
verify`` then said "ok: 0 events". Here: commands that only read never create a store; no
command creates missing folders unless asked (``--create``, ``clearance init``); a folder, a
file that is not a database or a read-only store is named as such before SQLite's own error
can turn into a traceback; a database URL is checked for a known kind and an installed driver.
Each problem is a :class:`StoreProblem`: one line saying what is wrong and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clearance.cli.failures import Refusal

__all__ = ["Target", "StoreProblem", "DEFAULT_DB", "prepare", "target"]

DEFAULT_DB = "clearance.db"
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreProblem(Refusal):
    """The store given cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """A store location as the user gave it: a SQLite file (``path``) or a database URL."""

    location: str
    path: Path | None

    @property
    def shown(self) -> str:
        """How to name it in a message: the path, or the URL without its password."""
        if self.path is not None:
            return str(self.path)
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.location).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - unparseable: said by prepare()
            return self.location


def target(db: str | None) -> Target:
    loc = db if db is not None else os.environ.get("CLEARANCE_DB") or DEFAULT_DB
    if "://" in loc:
        return Target(loc, None)
    return Target(loc, Path(loc).expanduser())


def prepare(db: str | None, *, reading: bool, create: bool) -> Target:
    """Check the store at ``db`` (``--db``, else ``CLEARANCE_DB``, else ``./clearance.db``)
    before it is opened. ``reading``: the command only reads, so a missing store is an error
    unless ``create``. Missing folders are made only with ``create``."""
    where = target(db)
    if where.path is None:
        _check_url(where)
        return where
    path = where.path
    if path.is_dir():
        raise StoreProblem(f"{path} is a folder, not a store: pass a file in it, e.g. --db {path / DEFAULT_DB}")
    if not path.exists():
        if reading and not create:
            raise StoreProblem(f"no store at {path}: create it with `clearance init` or pass `--create`")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.exists():
            if not create:
                raise StoreProblem(f"no folder {folder} for the store {path}: check --db, or pass --create to make it")
            folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreProblem(f"cannot create the store {path}: the folder {folder} is read-only")
        return where
    if not path.is_file():
        raise StoreProblem(f"{path} is not a regular file, so it cannot be a store: check --db")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreProblem(f"cannot read the store {path}: {exc.strerror}") from None
    if head and head != _SQLITE_MAGIC:
        raise StoreProblem(f"{path} is not a clearance store (not a SQLite database): check --db")
    folder = path.parent if str(path.parent) else Path(".")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreProblem(f"the folder {folder} of the store {path} is read-only: SQLite keeps its journal "
                           f"({path.name}-wal, {path.name}-shm) beside the store; make the folder writable")  # fmt: skip
    if not os.access(path, os.W_OK):
        raise StoreProblem(f"the store {path} is read-only: clearance writes to it even to read (its schema, its journal); "
                           f"make it writable, or copy it somewhere writable")  # fmt: skip
    return where


def _check_url(where: Target) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(where.location)
    except ArgumentError:
        raise StoreProblem(f"--db {where.location!r} is not a database URL: give a SQLite file path or "
                           f"postgresql://USER@HOST:PORT/DATABASE") from None  # fmt: skip
    backend = url.get_backend_name()
    if backend not in ("postgresql", "postgres", "sqlite"):
        raise StoreProblem(f"clearance stores in SQLite or PostgreSQL, not {backend!r}: give a file path or "
                           f"postgresql://USER@HOST:PORT/DATABASE") from None  # fmt: skip
    if backend in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401 - the driver resolve_location picks for postgresql:// URLs
        except ImportError:
            raise StoreProblem("PostgreSQL needs its driver: pip install 'clearance[postgres]'") from None
