"""Dispatch: a tool call that becomes a request for someone else to act (openai-chat-engram's
``dispatchTools``).

A call to a dispatch tool is governed like any call; once allowed, its arguments become an
``action_request`` (``target``, ``inputs``) handed to a dispatcher: a callable of yours, or an
HTTP webhook. A blocked dispatch is never dispatched; one that needs approval is dispatched
when it is approved and resumed.

Webhook requests are signed so the receiver can check they come from us and are fresh:
``X-Clearance-Timestamp`` (Unix seconds) and ``X-Clearance-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``"{timestamp}.{body}"`` with the shared secret. :func:`verify_signature` is the
receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

__all__ = ["WebhookDispatcher", "action_request", "sign", "verify_signature"]

#: Argument names that carry the target themselves (the engram's ``storyName``).
_TARGET_KEYS = ("storyName", "target")


def action_request(tool: str, default_target: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """What the call asks for: its own target if its arguments name one, else the configured one."""
    named = next((args[k] for k in _TARGET_KEYS if isinstance(args.get(k), str) and args.get(k)), None)
    if named is not None:
        inputs = args.get("inputs")
        if inputs is None:
            inputs = {k: v for k, v in args.items() if k not in _TARGET_KEYS}
        return {"tool": tool, "target": named, "inputs": inputs}
    return {"tool": tool, "target": default_target, "inputs": dict(args)}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_seconds: int = 300,
                     now: float | None = None) -> bool:  # fmt: skip
    """True if ``signature`` is ours for this body and the timestamp is within the tolerance."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


class WebhookDispatcher:
    """POST each action request as JSON to ``url``, signed; retried on connection errors and 5xx.

    The receiver gets the same ``X-Clearance-Delivery`` id on every attempt, so it can drop
    repeats. Returns the receiver's JSON reply (or its text), which becomes the tool's output.
    """

    def __init__(self, url: str, secret: str, *, timeout_seconds: float = 10.0, attempts: int = 3,
                 backoff_seconds: float = 0.5, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        if not secret:
            raise ValueError("a webhook dispatcher needs a secret to sign with")
        self.url, self.secret = url, secret
        self.attempts, self.backoff_seconds = max(1, attempts), backoff_seconds
        self.clock = clock
        self._client = httpx.Client(timeout=timeout_seconds)

    def __call__(self, request: Mapping[str, Any]) -> Any:
        body = json.dumps(request, separators=(",", ":"), sort_keys=True, default=str).encode()
        delivery = hashlib.sha256(body + str(self.clock()).encode()).hexdigest()[:32]
        last: Exception | None = None
        for attempt in range(self.attempts):
            ts = int(self.clock())
            headers = {"Content-Type": "application/json", "X-Clearance-Timestamp": str(ts),
                       "X-Clearance-Signature": sign(self.secret, ts, body), "X-Clearance-Delivery": delivery}  # fmt: skip
            try:
                reply = self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                last = exc
            else:
                if reply.status_code < 500:
                    reply.raise_for_status()  # a 4xx is the receiver's "no": not retried
                    try:
                        return reply.json()
                    except ValueError:
                        return reply.text
                last = httpx.HTTPStatusError(f"webhook answered {reply.status_code}", request=reply.request, response=reply)
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_seconds * 2**attempt)
        assert last is not None
        raise last

    def close(self) -> None:
        self._client.close()
