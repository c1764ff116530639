"""API keys, an engine operation set (``engine.keys``): created, listed, revoked, verified.

The server authenticates every request with them and ``clearance keys`` manages them; both go
through the engine, which alone touches the store. A key is ``clr_<key id>_<secret>``: the id
finds the row, the secret is checked against its SHA-256 with :func:`hmac.compare_digest`; only
the hash is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from clearance.engine import audit
from clearance.model import utcnow
from clearance.store import SqlStore
from clearance.store import keys as rows

__all__ = ["ROLES", "ApiKey", "Keys", "Principal", "Role", "parse_token"]

Role = Literal["agent", "approver", "admin"]
ROLES: tuple[Role, ...] = ("agent", "approver", "admin")
PREFIX = "clr_"
#: How long a verified key is trusted before the store is read again (revocation delay).
CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: Role
    identity: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    identity: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    revoked_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed token, else None."""
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or len(key_id) != 16 or not secret or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


class Keys:
    """The API keys of one engine's store (``engine.keys``), with a short cache for verifying."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, str, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, role: str, *, identity: str | None = None, created_by: str | None = None) -> tuple[ApiKey, str]:
        """A new key and its token; the token is shown once and never stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not name or len(name) > 256:
            raise ValueError("a key needs a name of 1 to 256 characters")
        identity = identity or name
        if len(identity) > 256:
            raise ValueError("identity is longer than 256 characters")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = utcnow()
        row = {"key_id": key_id, "secret_hash": _hash(secret), "name": name, "role": role, "identity": identity,
               "created_at": now, "created_by": created_by, "revoked_at": None, "revoked_by": None}  # fmt: skip
        with self.store.write() as tx:
            rows.insert_key(tx, row)
            audit.append(tx, "api_key.created", {"key_id": key_id, "name": name, "role": role, "identity": identity,
                         "created_by": created_by}, now=now)  # fmt: skip
        return self._key(row), f"{PREFIX}{key_id}_{secret}"

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        with self.store.read() as tx:
            return [self._key(r) for r in rows.list_keys(tx, include_revoked=include_revoked)]

    def get(self, key_id: str) -> ApiKey | None:
        with self.store.read() as tx:
            r = rows.get_key(tx, key_id)
        return self._key(r) if r else None

    def revoke(self, key_id: str, *, by: str | None = None) -> bool:
        """Revoke a key; False when it does not exist or was revoked already."""
        now = utcnow()
        with self.store.write() as tx:
            done = rows.revoke_key(tx, key_id, now, by)
            if done:
                audit.append(tx, "api_key.revoked", {"key_id": key_id, "revoked_by": by}, now=now)
        with self._lock:
            self._cache.pop(key_id, None)
        return done

    def authenticate(self, token: str) -> Principal | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        digest = _hash(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is None or cached[0] < now:
            with self.store.read() as tx:
                r = rows.get_key(tx, key_id)
            if r is None or r["revoked_at"] is not None:
                stored, principal = "", None
            else:
                stored = r["secret_hash"]
                principal = Principal(key_id=key_id, name=r["name"], role=r["role"], identity=r["identity"])
            cached = (now + CACHE_SECONDS, stored, principal)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key_id] = cached
        _, stored, principal = cached
        # Compare even when the key is unknown, so timing says nothing about which ids exist.
        ok = hmac.compare_digest(digest, stored or "0" * 64)
        return principal if ok and principal is not None else None

    @staticmethod
    def _key(row: dict[str, Any]) -> ApiKey:
        return ApiKey(**{k: row[k] for k in ApiKey.__dataclass_fields__})


