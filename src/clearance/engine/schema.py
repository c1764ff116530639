"""The store's schema version, read and upgraded on purpose.

Opening a store from a library or the CLI upgrades it on the way (``Engine(path)``). A server is
different: several replicas share one database, and one replica of a newer release quietly
migrating it under the older others is how a rolling upgrade goes wrong. So ``clearance serve``
refuses a store whose schema is behind (``require_current_schema``) and ``clearance db upgrade``
is the one deliberate step that moves it (``upgrade_schema``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clearance.errors import ClearanceError
from clearance.store import SqlStore, resolve_location
from clearance.store.migrate import HEAD, current_revision, upgrade

__all__ = ["SchemaOutOfDate", "SchemaStatus", "require_current_schema", "schema_status", "upgrade_schema"]


class SchemaOutOfDate(ClearanceError):
    """The store's schema is not the one this release of clearance works with."""


@dataclass(frozen=True)
class SchemaStatus:
    location: str
    current: str | None  # None: an empty database (no clearance schema yet)
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def empty(self) -> bool:
        return self.current is None

    def as_dict(self) -> dict[str, object]:
        return {"location": self.location, "current": self.current, "head": self.head, "up_to_date": self.up_to_date}


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.database or url if parsed.get_backend_name() == "sqlite" else parsed.render_as_string(hide_password=True)


def schema_status(location: str | Path | None = None) -> SchemaStatus:
    """Where the store's schema is, without changing anything in it."""
    url = resolve_location(location)
    store = SqlStore(url, migrate=False)
    try:
        return SchemaStatus(_shown(url), current_revision(store.engine), HEAD)
    finally:
        store.close()


def upgrade_schema(location: str | Path | None = None) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the store to this release's schema; the status before and after."""
    url = resolve_location(location)
    store = SqlStore(url, migrate=False)
    try:
        before = SchemaStatus(_shown(url), current_revision(store.engine), HEAD)
        upgrade(store.engine)
        return before, SchemaStatus(before.location, current_revision(store.engine), HEAD)
    finally:
        store.close()


def require_current_schema(location: str | Path | None = None) -> SchemaStatus:
    """Refuse a store whose schema is behind (or ahead of) this release. An empty database is
    fine: the first server creates the schema."""
    status = schema_status(location)
    if status.empty or status.up_to_date:
        return status
    if status.current is not None and status.current > status.head:
        raise SchemaOutOfDate(f"the store {status.location} has schema {status.current}, newer than this clearance knows "
                              f"({status.head}): run the newer clearance release")  # fmt: skip
    raise SchemaOutOfDate(f"the store {status.location} has schema {status.current}; this clearance needs {status.head}: "
                          f"back it up, then run `clearance db upgrade` (once, from one machine)")  # fmt: skip
