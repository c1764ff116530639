"""``Idempotency-Key`` on POST, PUT and DELETE: a retried request gets the first answer.

The first request with a key reserves it (a row in ``idempotency_keys``, committed before the
operation runs), runs, and stores its status and body. A retry with the same key and the same
request gets that stored answer (header ``Idempotent-Replayed: true``) and nothing runs twice;
the same key on a different request is refused (422 ``idempotency_key_reused``); a retry that
arrives while the first is still running waits for it, then gets its answer, or 409
``idempotency_in_progress`` if it takes too long. Keys are scoped to the API key, kept 24 hours,
and answers that refused the caller (401, 403) or failed (5xx) are not kept, so those can be
retried. If the server dies between deciding and storing the answer, the key stays reserved
and every retry gets 409: the operation is never run a second time under that key.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearance.model import utcnow
from clearance.server.auth import Keys
from clearance.server.errors import envelope
from clearance.store import WAL_AUTOCHECKPOINT_PAGES, SqlStore
from clearance.store.schema import idempotency_keys as T

__all__ = ["IdempotencyMiddleware", "IdempotencyStore"]

KEEP = timedelta(hours=24)
WAIT_SECONDS = 30.0
_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})


class IdempotencyStore:
    """The ``idempotency_keys`` rows, written on their own connections without waiting for a
    flush to disk: on SQLite with ``synchronous=NORMAL``, on PostgreSQL with
    ``synchronous_commit off``. That is safe here because the operation that follows a
    reservation commits with a full flush of the same log, which makes the reservation durable
    first; a stored answer lost in a power cut leaves its key reserved, so a retry gets 409
    rather than a second decision."""

    def __init__(self, store: SqlStore, lock: AbstractContextManager[Any] | None = None) -> None:
        self.store = store
        self._lock = lock if lock is not None else nullcontext()
        self._since_prune = 0
        self.engine = store.engine
        self._sqlite_path: str | None = None
        self.inline = store.dialect == "sqlite"
        if store.dialect == "sqlite":
            # Plain sqlite3 connections, one per thread, one statement per step: this runs twice
            # for every decision that carries a key, so it is kept to the bare minimum.
            self._sqlite_path = store.engine.url.database
            self._local = threading.local()
            self._opened: list[sqlite3.Connection] = []

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock, self.engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            assert self._sqlite_path is not None
            conn = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            # Checkpoints are the store's business (its checkpointer thread): with SQLite's
            # default of 1000 pages these commits, made on the event loop, would run them.
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._local.conn = conn
            self._opened.append(conn)
        return conn

    def begin(self, key_id: str, idem_key: str, fingerprint: str) -> tuple[str, int | None, str | None]:
        """``("new", None, None)`` once reserved; ``("done", status, body)``; ``("pending", ...)``; ``("mismatch", ...)``."""
        if self._sqlite_path is not None:
            return self._begin_sqlite(key_id, idem_key, fingerprint)
        now = utcnow()
        c = T.c
        try:
            with self._write() as conn:
                self._since_prune += 1
                if self._since_prune >= 1000:
                    self._since_prune = 0
                    conn.execute(delete(T).where(c.created_at < now - KEEP))
                row = conn.execute(select(T).where(c.key_id == key_id, c.idem_key == idem_key)).mappings().first()
                if row is None:
                    conn.execute(insert(T), {"key_id": key_id, "idem_key": idem_key, "fingerprint": fingerprint,
                                             "state": "pending", "status_code": None, "body": None, "created_at": now})  # fmt: skip
                    return "new", None, None
        except IntegrityError:  # another process reserved it between our read and insert
            return "pending", None, None
        if row["fingerprint"] != fingerprint:
            return "mismatch", None, None
        if row["state"] != "done":
            return "pending", None, None
        return "done", row["status_code"], row["body"]

    def _begin_sqlite(self, key_id: str, idem_key: str, fingerprint: str) -> tuple[str, int | None, str | None]:
        conn = self._sqlite()
        now = utcnow()
        with self._lock:
            self._since_prune += 1
            if self._since_prune >= 1000:
                self._since_prune = 0
                conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (_sqlite_time(now - KEEP),))
            inserted = conn.execute(
                "INSERT INTO idempotency_keys (key_id, idem_key, fingerprint, state, created_at) "
                "VALUES (?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
                (key_id, idem_key, fingerprint, _sqlite_time(now)),
            ).rowcount
        self.store.note_commit()
        if inserted == 1:
            return "new", None, None
        row = conn.execute("SELECT fingerprint, state, status_code, body FROM idempotency_keys WHERE key_id = ? AND idem_key = ?",
                           (key_id, idem_key)).fetchone()  # fmt: skip
        if row is None or row[0] != fingerprint:
            return ("pending" if row is None else "mismatch"), None, None
        if row[1] != "done":
            return "pending", None, None
        return "done", row[2], row[3]

    def finish(self, key_id: str, idem_key: str, status: int, body: str) -> None:
        if self._sqlite_path is not None:
            with self._lock:
                self._sqlite().execute("UPDATE idempotency_keys SET state = 'done', status_code = ?, body = ? "
                                       "WHERE key_id = ? AND idem_key = ?", (status, body, key_id, idem_key))  # fmt: skip
            return
        with self._write() as conn:
            conn.execute(update(T).where(T.c.key_id == key_id, T.c.idem_key == idem_key)
                         .values(state="done", status_code=status, body=body))  # fmt: skip

    def abandon(self, key_id: str, idem_key: str) -> None:
        if self._sqlite_path is not None:
            with self._lock:
                self._sqlite().execute("DELETE FROM idempotency_keys WHERE key_id = ? AND idem_key = ?", (key_id, idem_key))
            return
        with self._write() as conn:
            conn.execute(delete(T).where(T.c.key_id == key_id, T.c.idem_key == idem_key))

    def close(self) -> None:
        for conn in getattr(self, "_opened", []):
            conn.close()


def _sqlite_time(value: datetime) -> str:
    """How the store's UTCDateTime column is spelled in SQLite (naive UTC, microseconds)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, keys: Keys, store: IdempotencyStore) -> None:
        self.app, self.keys, self.store = app, keys, store

    async def _run(self, fn: Any, *args: Any) -> Any:
        # On SQLite each step is one short statement (tens of microseconds): a thread hop would
        # cost more than it saves, unless a writer holds the server's write lock (a decision
        # being committed): waiting for it here would stall the event loop. Elsewhere it is a
        # network round trip, so it goes to a thread.
        if self.store.inline:
            lock = self.store._lock
            acquire = getattr(lock, "acquire", None)
            if acquire is None:
                return fn(*args)
            if acquire(blocking=False):
                try:
                    return fn(*args)
                finally:
                    lock.release()
        return await run_in_threadpool(fn, *args)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        raw_key = headers.get(b"idempotency-key")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if raw_key is None or not auth.lower().startswith("bearer "):
            await self.app(scope, receive, send)
            return
        correlation = scope.get("state", {}).get("correlation_id")
        idem_key = raw_key.decode("latin-1")
        if not 1 <= len(idem_key) <= 255 or not idem_key.isprintable():
            await envelope(422, "validation_error", "Idempotency-Key must be 1 to 255 printable characters",
                           field="header.idempotency-key", correlation_id=correlation)(scope, receive, send)  # fmt: skip
            return
        principal = self.keys.authenticate(auth[7:].strip())  # cached: reads the store about once a second
        if principal is None:  # the route answers 401 (and audits it)
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        digest = hashlib.sha256()
        for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body):
            digest.update(len(part).to_bytes(8, "big") + part)
        fingerprint = digest.hexdigest()

        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            state, status, stored = await self._run(self.store.begin, principal.key_id, idem_key, fingerprint)
            if state != "pending" or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if state == "mismatch":
            await envelope(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request",
                           field="header.idempotency-key", correlation_id=correlation)(scope, receive, send)  # fmt: skip
            return
        if state == "pending":
            await envelope(409, "idempotency_in_progress", "a request with this Idempotency-Key has not finished; "
                           "retry later or use a new key", correlation_id=correlation)(scope, receive, send)  # fmt: skip
            return
        if state == "done":
            assert status is not None and stored is not None
            payload = stored.encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                    (b"idempotent-replayed", b"true")]})  # fmt: skip
            await send({"type": "http.response.body", "body": payload})
            return

        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: Message | None = None
        out: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))

        try:
            await self.app(scope, replay, capture)
        except BaseException:
            await self._run(self.store.abandon, principal.key_id, idem_key)
            raise
        assert start is not None
        code = int(start["status"])
        payload = b"".join(out)
        if code in (401, 403) or code >= 500:
            await self._run(self.store.abandon, principal.key_id, idem_key)
        else:
            await self._run(self.store.finish, principal.key_id, idem_key, code, payload.decode())
        await send(start)
        await send({"type": "http.response.body", "body": payload})
