"""Dispatch: a tool call that becomes a request for someone else to act (openai-chat-engram's
``dispatchTools``).

A call to a dispatch tool is governed like any call; once allowed, its arguments become an
``action_request`` (``target``, ``inputs``) handed to a dispatcher: a callable of yours, or
:class:`DispatchWebhook`, which POSTs it to a URL. A blocked dispatch is never dispatched; one
that needs approval is dispatched when it is approved and resumed.

Webhook requests are signed as Standard Webhooks (:mod:`clearance.signing`); receivers check
them with :func:`clearance.signing.verify`.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from clearance.model import new_id
from clearance.signing import signed_headers

__all__ = ["DispatchWebhook", "action_request", "dispatching"]

#: Argument names that carry the target themselves (the engram's ``storyName``).
_TARGET_KEYS = ("storyName", "target")

#: The request id of the decision that let the running tool call run (set by the guard).
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("clearance_dispatch_request", default=None)


def action_request(tool: str, default_target: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """What the call asks for: its own target if its arguments name one, else the configured one."""
    named = next((args[k] for k in _TARGET_KEYS if isinstance(args.get(k), str) and args.get(k)), None)
    if named is not None:
        inputs = args.get("inputs")
        if inputs is None:
            inputs = {k: v for k, v in args.items() if k not in _TARGET_KEYS}
        return {"tool": tool, "target": named, "inputs": inputs}
    return {"tool": tool, "target": default_target, "inputs": dict(args)}


@contextmanager
def dispatching(request_id: str | None) -> Iterator[None]:
    """While a tool call runs: the decision it runs under, which names its webhook message."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500)


class DispatchWebhook:
    """POST each action request as JSON to ``url``, signed; retried on connection errors and 5xx
    (a 4xx is the receiver's "no": raised at once). Returns the receiver's JSON reply (or its
    text), which becomes the tool's output.

    The ``webhook-id`` is ``dsp_<request id of the call's decision>``: the same on every attempt,
    and again if the call is dispatched twice, so the receiver can drop repeats.
    """

    def __init__(self, url: str, secret: str, *, timeout_seconds: float = 10.0, attempts: int = 3,
                 backoff_seconds: float = 0.5) -> None:  # fmt: skip
        if not secret:
            raise ValueError("a dispatch webhook needs a secret to sign with")
        self.url, self.secret = url, secret
        self.attempts, self.backoff_seconds = max(1, attempts), backoff_seconds
        self._client = httpx.Client(timeout=timeout_seconds)

    def __call__(self, request: Mapping[str, Any]) -> Any:
        body = json.dumps(request, separators=(",", ":"), sort_keys=True, default=str).encode()
        msg_id = f"dsp_{_request_id.get() or new_id('call')}"
        for attempt in Retrying(stop=stop_after_attempt(self.attempts), wait=wait_exponential(self.backoff_seconds),
                                retry=retry_if_exception(_retryable), reraise=True):  # fmt: skip
            with attempt:
                headers = {"Content-Type": "application/json", **signed_headers(self.secret, msg_id, body)}
                reply = self._client.post(self.url, content=body, headers=headers).raise_for_status()
        try:
            return reply.json()
        except ValueError:
            return reply.text

    def close(self) -> None:
        self._client.close()
