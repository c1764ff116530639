"""Outbound approval webhooks: the server POSTs ``approval.requested``, ``approval.resolved`` and
``approval.expired`` to each configured URL, signed, retried, exactly once per endpoint.

Driven by the audit trail rather than by the request that resolved an approval, through the
engine's webhook outbox (``engine.webhook_outbox``): each worker's sender has its outbox
queue and claim deliveries, **sends** them with httpx outside any transaction, and records the
answer: delivered, final failure, or a retry time (exponential backoff with jitter, or
``Retry-After``).

A crash after queueing loses nothing (the rows are durable); a crash while sending leaves a
lease that lapses, and the delivery is sent again with the same ``webhook-id``, so receivers
that remember ids see each event once. That is the only case of a second send.

A new endpoint starts at the current end of the audit trail: it is told about what happens
from then on, not about the whole history.

Each request carries ``Clearance-Event`` and is signed as Standard Webhooks, with the delivery
id as ``webhook-id`` (:mod:`clearance.signing`); receivers check it with
:func:`clearance.signing.verify`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clearance._version import __version__
from clearance.model import Attempt, Delivery, new_id
from clearance.retry_after import retry_after_seconds
from clearance.signing import signed_headers

if TYPE_CHECKING:
    from clearance.engine import Engine

__all__ = ["EVENTS", "ApprovalWebhookSender", "WebhookSettings"]

log = logging.getLogger("clearance.server.webhooks")

#: The audit event types that are sent.
EVENTS = ("approval.requested", "approval.resolved", "approval.expired", "drift.detected")
EVENT_HEADER = "Clearance-Event"

# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSettings:
    """Where and how approval webhooks are sent.

    ``backoff_seconds`` is the first retry's delay; each later one doubles, up to
    ``max_backoff_seconds``, and is drawn between half and all of that (jitter, so that many
    failed deliveries do not all come back at once). A ``Retry-After`` answer is honoured up
    to ``max_retry_after_seconds``. ``lease_seconds`` must outlast one request
    (``timeout_seconds``): past it, another worker may send the delivery again.
    """

    urls: tuple[str, ...]
    secret: str
    events: tuple[str, ...] = EVENTS
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 600.0
    max_retry_after_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    batch: int = 50
    lease_seconds: float | None = None
    retention_days: float = 7.0
    shutdown_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(dict.fromkeys(u.strip() for u in self.urls if u.strip())))
        if not self.urls:
            raise ValueError("webhooks need at least one URL")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"a webhook URL must start with http:// or https://, got {url!r}")
        if not self.secret:
            raise ValueError("webhooks need a signing secret (--webhook-secret or CLEARANCE_WEBHOOK_SECRET)")
        signed_headers(self.secret, "check", b"")  # a malformed whsec_ secret fails at start, not at each send
        unknown = set(self.events) - set(EVENTS)
        if unknown:
            raise ValueError(f"unknown webhook events {sorted(unknown)}; known: {list(EVENTS)}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @property
    def lease(self) -> float:
        return self.lease_seconds if self.lease_seconds is not None else self.timeout_seconds + 30.0

    @classmethod
    def resolve(cls, urls: Sequence[str] = (), secret: str | None = None, environ: Mapping[str, str] | None = None,
                **kw: Any) -> WebhookSettings | None:  # fmt: skip
        """Settings from explicit values, else ``CLEARANCE_WEBHOOK_URLS`` (comma-separated) and
        ``CLEARANCE_WEBHOOK_SECRET``; ``None`` when no URL is configured."""
        env = os.environ if environ is None else environ
        found = [u for u in urls if u.strip()] or [u for u in env.get("CLEARANCE_WEBHOOK_URLS", "").split(",") if u.strip()]
        if not found:
            return None
        return cls(urls=tuple(found), secret=secret or env.get("CLEARANCE_WEBHOOK_SECRET", ""), **kw)


def endpoint_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


# -- the sender -----------------------------------------------------------------------


@dataclass
class ApprovalWebhookSender:
    """Sends the deliveries of one server worker's outbox (``engine.webhook_outbox``, see
    its module doc): claims them, sends them, records the answers.

    ``on_result(event_type, outcome)`` is told of each attempt's outcome (``delivered``,
    ``retry``, ``failed``) for metrics.
    """

    engine: Engine
    settings: WebhookSettings
    on_result: Callable[[str, str], None] | None = None
    worker_id: str = field(default_factory=lambda: new_id("whw"))

    def __post_init__(self) -> None:
        self.outbox = self.engine.webhook_outbox({endpoint_id(u): u for u in self.settings.urls}, self.settings.events,
                                                 worker_id=self.worker_id, batch=self.settings.batch,
                                                 lease_seconds=self.settings.lease,
                                                 retention_days=self.settings.retention_days)  # fmt: skip
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def backlog(self) -> int:
        """Deliveries to this server's endpoints not yet delivered or given up (the metrics gauge)."""
        return self.outbox.backlog()

    # -- sending --------------------------------------------------------------------------
    def _retry_delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.settings.max_retry_after_seconds)
        ceiling = min(self.settings.max_backoff_seconds, self.settings.backoff_seconds * 2 ** (attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _retry_or_fail(self, c: Delivery, status: int | None, error: str, retry_after: float | None = None) -> Attempt:
        if c.attempts >= self.settings.max_attempts:
            log.warning("webhook delivery %s to %s failed after %d attempts: %s", c.delivery_id, c.url, c.attempts, error)
            return Attempt(c, "failed", status, error)
        return Attempt(c, "retry", status, error, self._retry_delay(c.attempts, retry_after))

    async def send(self, client: Any, c: Delivery) -> Attempt:
        import httpx

        body = c.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"clearance-webhooks/{__version__}",
            EVENT_HEADER: c.event_type,
            "Clearance-Attempt": str(c.attempts),
            **signed_headers(self.settings.secret, c.delivery_id, body),
        }
        try:
            resp = await client.post(c.url, content=body, headers=headers, timeout=self.settings.timeout_seconds)
        except asyncio.CancelledError:
            return Attempt(c, "released", None, "cancelled at shutdown")
        except httpx.TimeoutException as exc:
            return self._retry_or_fail(c, None, f"timed out: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return self._retry_or_fail(c, None, f"{type(exc).__name__}: {exc}")
        code = resp.status_code
        if 200 <= code < 300:
            return Attempt(c, "delivered", code)
        text = f"HTTP {code}: {resp.text[:200]}"
        if code >= 500 or code in (408, 429):
            return self._retry_or_fail(c, code, text, retry_after_seconds(resp.headers))
        log.warning("webhook delivery %s to %s refused with %d; not retried", c.delivery_id, c.url, code)
        return Attempt(c, "failed", code, text)

    # -- the background task --------------------------------------------------------------
    def wake(self) -> None:
        """Look for work now rather than at the next poll (thread-safe)."""
        loop, wake = getattr(self, "_loop", None), self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        await asyncio.to_thread(self.outbox.prepare)
        self._task = asyncio.create_task(self._run(), name="clearance-webhooks")

    async def stop(self) -> None:
        """Let the round in flight finish (up to ``shutdown_grace_seconds``), then cancel it;
        deliveries cut short are released for the next start, or for another worker."""
        if self._task is None or self._stopping is None:
            return
        self._stopping.set()
        self.wake()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.settings.shutdown_grace_seconds)
        except asyncio.TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None

    async def _run(self) -> None:
        import httpx

        assert self._wake is not None and self._stopping is not None
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed, due_in = await asyncio.to_thread(self.outbox.step)
                    if claimed:
                        results = await self._send_all(client, claimed)
                        await asyncio.to_thread(self.outbox.record, results)
                        for r in results:
                            if self.on_result is not None and r.state != "released":
                                self.on_result(r.delivery.event_type, r.state)
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a store hiccup must not end the loop
                    log.exception("webhook sender round failed; retrying")
                    due_in = None
                wait = self.settings.poll_seconds if due_in is None else min(self.settings.poll_seconds, max(due_in, 0.0))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass

    async def _send_all(self, client: Any, claimed: list[Delivery]) -> list[Attempt]:
        tasks = [asyncio.ensure_future(self.send(client, c)) for c in claimed]
        try:
            return list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            # Shutdown: release whatever had no answer, so a restart sends it at once.
            results = [task.result() if task.done() and not task.cancelled() else Attempt(c, "released", None, "cancelled")
                       for task, c in zip(tasks, claimed)]  # fmt: skip
            await asyncio.to_thread(self.outbox.record, results)
            raise
