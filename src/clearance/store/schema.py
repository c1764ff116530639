"""Tables, in SQLAlchemy Core, portable between SQLite and PostgreSQL.

The migration scripts create exactly these tables; a test compares the migrated database
with this metadata so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Always timezone-aware UTC in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not timezone.utc:  # the common case, UTC already, needs no conversion
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store; use timezone-aware UTC")
            value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = MetaData()

decisions = Table(
    "decisions",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("trace_id", String(128), nullable=False),
    Column("tool", String(256), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("domain", String(256), nullable=False),
    Column("target", String(512)),
    Column("value", Float),
    # Canonical JSON (since 0008): the decision.made event's body is stored without this text
    # and gets it back from here (``events.arguments_at``), so arguments are kept once.
    Column("arguments", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    Column("result", String(32), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("decision", JSON, nullable=False),
    # No secondary indexes: the engine reads decisions by request_id only, and each index
    # would cost every decision one more page write.
)

# One row per (call, counting rule): the slot a call holds in a rate limit, budget or cooldown.
# Keyed by the call (approvals keep or release its slots); on SQLite without a rowid, so that
# key is the table itself rather than one more index to maintain on every decision.
usage = Table(
    "usage",
    metadata,
    Column("request_id", String(64), nullable=False),
    Column("rule_id", String(128), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("target", String(512), nullable=False),
    Column("value", Float, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("active", Boolean, nullable=False),
    # Set while the slot is only reserved by a pending approval: past it, the slot is free
    # even before anything marks the approval expired.
    Column("expires_at", UTCDateTime),
    PrimaryKeyConstraint("request_id", "rule_id"),
    # Covers the counting queries (count, total, last) so they never visit the table.
    Index("ix_usage_rule_actor_at", "rule_id", "actor", "at", "active", "expires_at", "value", "target"),
    sqlite_with_rowid=False,
)

approvals = Table(
    "approvals",
    metadata,
    Column("approval_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("approvals_required", Integer, nullable=False),
    Column("args_hash", String(64), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Column("resolved_by", String(256)),
    Column("comment", Text),
    Column("data", JSON, nullable=False),
    Index("ix_approvals_status_created", "status", "created_at"),
)

approval_votes = Table(
    "approval_votes",
    metadata,
    Column("approval_id", String(64), nullable=False),
    Column("approver", String(256), nullable=False),
    Column("resolution", String(16), nullable=False),
    Column("comment", Text),
    Column("at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("approval_id", "approver"),
)

executions = Table(
    "executions",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("claimed_by", String(256)),
    Column("claimed_at", UTCDateTime),
    Column("reported_at", UTCDateTime),
    Column("result_summary", JSON),
    Column("error", Text),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("severity", Float, nullable=False),
    Column("cost", Float, nullable=False),
    Column("description", Text),
    Column("observed_at", UTCDateTime, nullable=False),
    Column("reported_by", String(256)),
    Column("recorded_at", UTCDateTime, nullable=False),
    Index("ix_outcomes_request_id", "request_id"),
)

policies = Table(
    "policies",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("digest", String(64), nullable=False),
    Column("document", JSON, nullable=False),
    Column("rule_versions", JSON, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("applied_by", String(256)),
)

kill_switches = Table(
    "kill_switches",
    metadata,
    Column("scope", String(16), nullable=False),
    Column("value", String(256), nullable=False),
    Column("reason", Text),
    Column("activated_by", String(256)),
    Column("activated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("scope", "value"),
)

# The audit trail. `body` is the canonical JSON that is hashed; the other columns are copies
# for querying, and `verify` checks that they still agree with it. A lean decision.made row
# keeps less of it (see `decision_at`, `arguments_at` and `source_version`).
events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    # Not unique in the schema: ids are random and nothing looks an event up by its id, so a
    # unique index would only cost every event one more index entry.
    Column("event_id", String(64), nullable=False),
    Column("trace_id", String(128)),
    Column("request_id", String(64)),
    Column("type", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # decision.made: where the decisions row's JSON goes back into `body` (the lean store), and
    # (since 0008) where its arguments go back in before that; positions in the stored body.
    Column("decision_at", Integer),
    Column("arguments_at", Integer),
    # Set (since 0008) on a lean decision.made: `body` is then its payload alone, and the
    # envelope around it (the fields these columns copy) is rebuilt from the columns, with
    # this source version (clearance.store.envelope).
    Column("source_version", String(64)),
    Index("ix_events_request_id", "request_id"),
    Index("ix_events_trace_id", "trace_id"),
    Index("ix_events_type", "type"),
)

# The chain's tip, updated with every append: removing the newest events cannot go unseen, and
# locking this one row serialises writers on databases that take row locks.
chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


# Signed checkpoints of the chain's head (clearance.engine.anchor): the head at ``seq`` was
# ``hash``, signed by the key ``key_id``. ``document`` is the checkpoint exactly as signed and
# exported; the other columns are copies for queries. Only a key kept outside the database can
# make one, so an attacker who rewrites the events cannot make these agree with the rewrite.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", Integer, nullable=False, autoincrement=False),
    Column("key_id", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("document", Text, nullable=False),
    PrimaryKeyConstraint("seq", "key_id"),
)


# A run suspended while calls wait for approval. Its state lives here, never with the caller,
# and its digest is also written to the audit chain so an edited state is refused on resume.
runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("trace_id", String(128), nullable=False),
    Column("state", JSON, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # One resumer at a time: who holds the run, and until when (a crashed holder's lease lapses).
    Column("leased_by", String(64)),
    Column("leased_until", UTCDateTime),
    # Who saved it over the API (the key's identity): only they may save it again or release it.
    Column("owner", String(256)),
)

# Which run waits for which approval; `consumed_at` makes resuming exactly-once.
run_approvals = Table(
    "run_approvals",
    metadata,
    Column("approval_id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("consumed_at", UTCDateTime),
    Index("ix_run_approvals_run_id", "run_id"),
)


# API keys of the control-plane server (clearance.server.auth): only a hash of each secret is kept.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("identity", String(256), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(256)),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(256)),
)

# Memory's snapshot on PostgreSQL (clearance.store.snapshots; a SQLite store keeps it in a
# file beside it), in chunks, all of one snapshot: the audit seq it reflects is in each row.
memory_snapshots = Table(
    "memory_snapshots",
    metadata,
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("saved_at", UTCDateTime, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# Where the audit chain was cut by `clearance store prune` (clearance.engine.retention): the
# last archived event's seq and hash, from which `audit verify` proves the events kept.
chain_cuts = Table(
    "chain_cuts",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("cut_at", UTCDateTime, nullable=False),
    Column("before", UTCDateTime, nullable=False),
    Column("archive", Text),
    Column("digest", String(64), nullable=False),
)


# What the server answered to a POST carrying an Idempotency-Key, per API key, so a retry
# gets the first answer instead of a second decision (clearance.server.idempotency).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key_id", String(32), nullable=False),
    Column("idem_key", String(256), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("status_code", Integer),
    Column("body", Text),
    Column("created_at", UTCDateTime, nullable=False),
    # A decision's answer: the decision it is (its JSON is not copied into `body`).
    Column("request_id", String(64)),
    PrimaryKeyConstraint("key_id", "idem_key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)


# Outbound approval webhooks (clearance.server.webhooks). Per endpoint, how far into the audit
# trail its deliveries have been queued; locking this row is how one worker at a time queues.
webhook_cursors = Table(
    "webhook_cursors",
    metadata,
    Column("endpoint_id", String(32), primary_key=True),
    Column("url", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per (endpoint, audit event): the signed body, fixed when queued so every retry sends
# the same bytes, and the state of its delivery. A worker claims a row with a lease, so the
# others leave it alone, and a crashed worker's claim lapses instead of losing the delivery.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("endpoint_id", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("leased_by", String(64)),
    Column("lease_until", UTCDateTime),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),
)
