"""Suspended agent runs, kept server-side while they wait for approvals.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(128), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("leased_by", sa.String(64)),
        sa.Column("leased_until", TS),
    )
    op.create_table(
        "run_approvals",
        sa.Column("approval_id", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("consumed_at", TS),
    )
    op.create_index("ix_run_approvals_run_id", "run_approvals", ["run_id"])


def downgrade() -> None:
    op.drop_table("run_approvals")
    op.drop_table("runs")
