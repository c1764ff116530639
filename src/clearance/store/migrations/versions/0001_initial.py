"""Initial schema: decisions, usage, approvals, executions, outcomes, policies, kill switches, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(128), nullable=False),
        sa.Column("tool", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("domain", sa.String(256), nullable=False),
        sa.Column("target", sa.String(512)),
        sa.Column("value", sa.Float),
        sa.Column("arguments", sa.JSON, nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("decision", sa.JSON, nullable=False),
    )

    op.create_table(
        "usage",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("expires_at", TS),
        sa.PrimaryKeyConstraint("request_id", "rule_id"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_usage_rule_actor_at", "usage", ["rule_id", "actor", "at", "active", "expires_at", "value", "target"])

    op.create_table(
        "approvals",
        sa.Column("approval_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approvals_required", sa.Integer, nullable=False),
        sa.Column("args_hash", sa.String(64), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("resolved_at", TS),
        sa.Column("resolved_by", sa.String(256)),
        sa.Column("comment", sa.Text),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_approvals_status_created", "approvals", ["status", "created_at"])

    op.create_table(
        "approval_votes",
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("approver", sa.String(256), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("approval_id", "approver"),
    )

    op.create_table(
        "executions",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("claimed_by", sa.String(256)),
        sa.Column("claimed_at", TS),
        sa.Column("reported_at", TS),
        sa.Column("result_summary", sa.JSON),
        sa.Column("error", sa.Text),
    )

    op.create_table(
        "outcomes",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.Float, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("reported_by", sa.String(256)),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_index("ix_outcomes_request_id", "outcomes", ["request_id"])

    op.create_table(
        "policies",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("rule_versions", sa.JSON, nullable=False),
        sa.Column("applied_at", TS, nullable=False),
        sa.Column("applied_by", sa.String(256)),
    )

    op.create_table(
        "kill_switches",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("activated_by", sa.String(256)),
        sa.Column("activated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", "value"),
    )

    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("trace_id", sa.String(128)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_events_request_id", "events", ["request_id"])
    op.create_index("ix_events_trace_id", "events", ["trace_id"])
    op.create_index("ix_events_type", "events", ["type"])

    head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64}])


def downgrade() -> None:
    for table in ("chain_head", "events", "kill_switches", "policies", "outcomes", "executions",
                  "approval_votes", "approvals", "usage", "decisions"):  # fmt: skip
        op.drop_table(table)
