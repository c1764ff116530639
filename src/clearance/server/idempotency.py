"""``Idempotency-Key`` on POST, PUT and DELETE: a retried request gets the first answer.

The first request with a key reserves it (a row in ``idempotency_keys``, committed before the
operation runs), runs, and stores its status and body. A retry with the same key and the same
request gets that stored answer (header ``Idempotent-Replayed: true``) and nothing runs twice;
the same key on a different request is refused (422 ``idempotency_key_reused``); a retry that
arrives while the first is still running waits for it (at most ``WAIT_SECONDS``, well inside
a client's read timeout and a server's graceful shutdown), then gets its answer, or 409
``idempotency_in_progress``. Keys are scoped to the API key, kept 24 hours,
and answers that refused the caller (401, 403) or failed (5xx) are not kept, so those can be
retried. If the server dies between deciding and storing the answer, the key stays reserved
and every retry gets 409: the operation is never run a second time under that key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearance.server.auth import Keys, bearer_token
from clearance.server.errors import ApiError, envelope

__all__ = ["IdempotencyMiddleware", "request_fingerprint"]

#: How long a retry waits for the request that holds its key (RemoteEngine reads for 10 s).
WAIT_SECONDS = 3.0
_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})


def idempotency_key(raw: bytes) -> str:
    """An ``Idempotency-Key`` header's value, or the 422 :class:`ApiError` for one we refuse."""
    key = raw.decode("latin-1")
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(422, "validation_error", "Idempotency-Key must be 1 to 255 printable characters",
                       field="header.idempotency-key")  # fmt: skip
    return key


def request_fingerprint(scope: Scope, body: bytes) -> str:
    """What an ``Idempotency-Key`` is bound to: method, path, query and body."""
    parts = (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body)
    return hashlib.sha256(b"".join(len(part).to_bytes(8, "big") + part for part in parts)).hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, keys: Keys, kept: Any) -> None:
        self.app, self.keys, self.kept = app, keys, kept  # kept: the engine's idempotency keys (engine.idempotency)

    async def _run(self, fn: Any, *args: Any) -> Any:
        # On SQLite each step is one short statement (tens of microseconds): a thread hop would
        # cost more than it saves, unless another writer holds the store (a decision being
        # committed): waiting for it here would stall the event loop. Elsewhere it is a network
        # round trip, so it goes to a thread.
        if self.kept.inline:
            done, value = self.kept.now_or_never(fn, *args)
            if done:
                return value
        return await run_in_threadpool(fn, *args)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        raw_key = headers.get(b"idempotency-key")
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if raw_key is None or not token:
            await self.app(scope, receive, send)
            return
        correlation = scope.get("state", {}).get("correlation_id")
        try:
            idem_key = idempotency_key(raw_key)
        except ApiError as exc:
            await envelope(exc.status, exc.type, exc.message, field=exc.field, correlation_id=correlation)(scope, receive, send)
            return
        principal = self.keys.authenticate(token)  # cached: reads the store about once a second
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
        fingerprint = request_fingerprint(scope, body)

        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            state, status, stored = await self._run(self.kept.begin, principal.key_id, idem_key, fingerprint)
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
            await self._run(self.kept.abandon, principal.key_id, idem_key)
            raise
        assert start is not None
        code = int(start["status"])
        payload = b"".join(out)
        if code in (401, 403) or code >= 500:
            await self._run(self.kept.abandon, principal.key_id, idem_key)
        else:
            await self._run(self.kept.finish, principal.key_id, idem_key, code, payload.decode())
        await send(start)
        await send({"type": "http.response.body", "body": payload})
