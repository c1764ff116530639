"""Compact rows: a decision's arguments and its event's envelope kept once, and one index
fewer per event.

- A ``decision.made`` event is stored without its action's arguments as well as without its
  decision's JSON: ``arguments_at`` says where the decisions row's arguments (canonical JSON
  from this revision on) go back in. Its body is kept as its payload alone when the row's own
  columns rebuild the envelope around it (ids, type, time, seq; ``source_version`` is set
  then, and names the version written into it). The hash still covers the whole body. Rows
  written before keep their arguments and envelope (both columns NULL) and stay valid.
- ``events.event_id`` loses its unique index: ids are random, and nothing looks an event up by
  its id.

On SQLite the events table is rebuilt (a copy), as SQLite cannot drop a constraint in place;
the store's writer lock is held meanwhile.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def _events_columns(*, compact: bool) -> list[sa.Column]:  # type: ignore[type-arg]
    columns = [
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=not compact),
        sa.Column("trace_id", sa.String(128)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("decision_at", sa.Integer),
    ]
    if not compact:
        return columns
    return [*columns, sa.Column("arguments_at", sa.Integer), sa.Column("source_version", sa.String(64))]


def _rebuild(name: str, columns: Callable[[], list], indexes: dict[str, list[str]]) -> None:  # type: ignore[type-arg]
    """SQLite: the table made anew as ``columns`` say, its rows copied, its indexes re-created."""
    new = f"_new_{name}"
    op.create_table(new, *columns())
    kept = ", ".join(c.name for c in columns() if isinstance(c, sa.Column) and c.name in _existing(name))
    op.execute(sa.text(f"INSERT INTO {new} ({kept}) SELECT {kept} FROM {name}"))
    op.drop_table(name)
    op.rename_table(new, name)
    for index, cols in indexes.items():
        op.create_index(index, name, cols)


def _existing(name: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(name)}


_EVENTS_INDEXES = {"ix_events_request_id": ["request_id"], "ix_events_trace_id": ["trace_id"], "ix_events_type": ["type"]}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("events", lambda: _events_columns(compact=True), _EVENTS_INDEXES)
        return
    op.add_column("events", sa.Column("arguments_at", sa.Integer))
    op.add_column("events", sa.Column("source_version", sa.String(64)))
    op.execute(sa.text("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_event_id_key"))


def _whole_envelopes() -> None:
    """Lean bodies get their envelopes back (rebuilt as the store does), in pages by seq."""
    from clearance.store.envelope import envelope
    from clearance.store.schema import UTCDateTime

    bind = op.get_bind()
    ev = sa.table("events", *(sa.column(n) for n in ("seq", "event_id", "trace_id", "request_id", "type", "body",
                                                       "decision_at", "arguments_at", "source_version")),
                  sa.column("created_at", UTCDateTime()))  # fmt: skip
    last = 0
    while rows := bind.execute(sa.select(ev).where(ev.c.seq > last, ev.c.source_version.is_not(None))
                               .order_by(ev.c.seq).limit(1000)).mappings().all():  # fmt: skip
        for r in rows:
            before, after = envelope(dict(r), r["source_version"])
            shift = len(before)
            bind.execute(ev.update().where(ev.c.seq == r["seq"]).values(
                body=before + r["body"] + after, decision_at=r["decision_at"] + shift,
                arguments_at=None if r["arguments_at"] is None else r["arguments_at"] + shift))  # fmt: skip
        last = rows[-1]["seq"]


def downgrade() -> None:
    _whole_envelopes()
    # The arguments go back into the events that refer to them (before the decision's place).
    args = "(SELECT CAST(d.arguments AS TEXT) FROM decisions d WHERE d.request_id = events.request_id)"
    op.execute(sa.text(
        f"UPDATE events SET body = substr(body, 1, arguments_at) || {args} || substr(body, arguments_at + 1), "
        f"decision_at = decision_at + length({args}) WHERE arguments_at IS NOT NULL"))  # fmt: skip
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("events", lambda: _events_columns(compact=False), _EVENTS_INDEXES)
        return
    op.drop_column("events", "source_version")
    op.drop_column("events", "arguments_at")
    op.create_unique_constraint("events_event_id_key", "events", ["event_id"])
