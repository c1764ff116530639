"""The ``api_keys`` rows: what the engine's key ring (:mod:`clearance.engine.keys`) reads and writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from clearance.store.schema import api_keys

__all__ = ["get_key", "insert_key", "list_keys", "revoke_key"]

_k = api_keys.c


def insert_key(tx: Any, row: dict[str, Any]) -> None:
    tx.conn.execute(insert(api_keys), row)


def get_key(tx: Any, key_id: str) -> dict[str, Any] | None:
    row = tx.conn.execute(select(api_keys).where(_k.key_id == key_id)).mappings().first()
    return dict(row) if row is not None else None


def list_keys(tx: Any, *, include_revoked: bool) -> list[dict[str, Any]]:
    q = select(api_keys).order_by(_k.created_at, _k.key_id)
    if not include_revoked:
        q = q.where(_k.revoked_at.is_(None))
    return [dict(r) for r in tx.conn.execute(q).mappings()]


def revoke_key(tx: Any, key_id: str, at: datetime, by: str | None) -> bool:
    """Revoke a key that is not revoked yet; whether it was."""
    done = tx.conn.execute(update(api_keys).where(_k.key_id == key_id, _k.revoked_at.is_(None)).values(revoked_at=at, revoked_by=by))
    return bool(done.rowcount == 1)
