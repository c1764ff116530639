"""A lean store: each decision's JSON kept once; memory snapshots (PostgreSQL); chain cuts.

A ``decision.made`` event keeps its body without the decision's JSON, and ``decision_at``
says where that text (the decisions row's) goes back in; the hash still covers the whole body.
An Idempotency-Key's answer to ``POST /v1/decisions`` refers to its decision (``request_id``)
instead of holding a copy. Rows written before this revision keep their full text and stay
valid (``decision_at`` and ``request_id`` NULL).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("decision_at", sa.Integer))
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64)))
    op.create_table(
        "memory_snapshots",
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "chain_cuts",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("cut_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archive", sa.Text),
        sa.Column("digest", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    # The decisions' JSON goes back into the events and answers that refer to it.
    op.execute(sa.text(
        "UPDATE events SET body = substr(body, 1, decision_at) || (SELECT CAST(d.decision AS TEXT) FROM decisions d "
        "WHERE d.request_id = events.request_id) || substr(body, decision_at + 1) WHERE decision_at IS NOT NULL"))
    op.execute(sa.text(
        "UPDATE idempotency_keys SET body = (SELECT CAST(d.decision AS TEXT) FROM decisions d "
        "WHERE d.request_id = idempotency_keys.request_id) WHERE request_id IS NOT NULL AND body IS NULL"))
    op.drop_table("chain_cuts")
    op.drop_table("memory_snapshots")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("decision_at")
