"""Per-request plumbing as plain ASGI: correlation ids, the body size limit, one JSON log line.

The size limit is checked on ``Content-Length`` and again on the bytes actually received, so a
chunked body cannot slip past it; either way the answer is a 413 envelope.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clearance.model import random_hex
from clearance.server.errors import envelope

__all__ = ["BodyTooLarge", "RequestContext"]

log = logging.getLogger("clearance.server.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BodyTooLarge(Exception):
    pass


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, observe: Callable[[str, str, int, float], None] | None = None,
                 fast: Any = None) -> None:  # fmt: skip
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.observe = observe
        # The one path that answers POST /v1/decisions (clearance.server.routes.decisions.DecisionEndpoint),
        # in front of the app.
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        given = headers.get(b"x-correlation-id", b"").decode("latin-1")
        correlation = given if given and _SAFE_ID.match(given) else random_hex(16)
        scope.setdefault("state", {})["correlation_id"] = correlation
        started = time.perf_counter()
        status = [0]
        fast_route: str | None = None

        exceeded = [False]

        async def send_wrapper(message: Message) -> None:
            if exceeded[0]:
                # The app read past the limit and answered (FastAPI turns the error into a 400):
                # the caller gets the 413 instead, once.
                if message["type"] == "http.response.start":
                    exceeded[0] = False
                    await respond(413, "payload_too_large", f"the body is larger than {self.max_body_bytes} bytes")
                    exceeded[0] = True
                return
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                hdrs = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-correlation-id"]
                hdrs.append((b"x-correlation-id", correlation.encode()))
                message = {**message, "headers": hdrs}
            await send(message)

        async def respond(code: int, type_: str, text: str) -> None:
            await envelope(code, type_, text, correlation_id=correlation)(scope, receive, send_wrapper)

        try:
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    too_big = int(length) > self.max_body_bytes
                except ValueError:
                    await respond(400, "bad_request", "Content-Length is not a number")
                    return
                if too_big:
                    await respond(413, "payload_too_large", f"the body is larger than {self.max_body_bytes} bytes")
                    return
            fast = self.fast
            if fast is not None and scope["method"] == "POST" and scope["path"] == fast.path:
                chunks, size = [], 0
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        await respond(413, "payload_too_large", f"the body is larger than {self.max_body_bytes} bytes")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        break
                body = b"".join(chunks)
                try:
                    code, response_headers, payload = await fast.handle(scope, headers, body)
                except Exception:  # as the app's handler for unexpected errors answers them
                    log.exception("internal error (correlation id %s)", correlation)
                    await respond(500, "internal_error", "internal error; the server log has the details")
                    return
                fast_route = fast.route
                status[0] = code  # the hot path's headers never carry a correlation id of their own
                response_headers.append((b"x-correlation-id", correlation.encode()))
                await send({"type": "http.response.start", "status": code, "headers": response_headers})
                await send({"type": "http.response.body", "body": payload})
                return
            received = [0]

            async def receive_limited() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > self.max_body_bytes:
                        exceeded[0] = True
                        raise BodyTooLarge()
                return message

            try:
                await self.app(scope, receive_limited, send_wrapper)
            except BodyTooLarge:
                if status[0]:
                    raise
                exceeded[0] = False
                await respond(413, "payload_too_large", f"the body is larger than {self.max_body_bytes} bytes")
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path_template = fast_route or getattr(route, "path", None) or "unmatched"
            principal = scope.get("state", {}).get("principal")
            if self.observe is not None:
                self.observe(scope["method"], path_template, status[0] or 500, elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info(json.dumps({
                    "event": "request", "method": scope["method"], "path": scope["path"], "route": path_template,
                    "status": status[0] or 500, "duration_ms": round(elapsed * 1000, 3), "correlation_id": correlation,
                    "key_id": getattr(principal, "key_id", None), "role": getattr(principal, "role", None),
                }))  # fmt: skip


def json_log_formatter() -> logging.Formatter:
    """Log records as one JSON object per line (messages that are JSON already are merged in)."""

    class _Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            base: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                                    "logger": record.name}  # fmt: skip
            msg = record.getMessage()
            try:
                extra = json.loads(msg)
                base.update(extra if isinstance(extra, dict) else {"message": msg})
            except ValueError:
                base["message"] = msg
            if record.exc_info:
                base["exception"] = self.formatException(record.exc_info)
            return json.dumps(base, default=str)

    return _Json()
