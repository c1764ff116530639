"""The application factory: one engine, its key store, the routes under ``/v1``."""

from __future__ import annotations

import asyncio
import os
import functools
import gc
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI

from clearance import __version__
from clearance.engine import Engine
from clearance.engine.anchor import settings_from_env as anchor_settings
from clearance.server import errors
from clearance.server.auth import bearer_token, throttled
from clearance.server.deps import printable_request
from clearance.server.errors import ErrorEnvelope
from clearance.server.idempotency import IdempotencyMiddleware
from clearance.server.middleware import RequestContext
from clearance.server.refusals import Refusals
from clearance.server.retention import RetentionSettings, RetentionTask
from clearance.server.throttle import AuthThrottle
from clearance.server.warmup import MemoryLifecycle, MemorySettings
from clearance.server.routes import approvals, audit, decisions, health, keys, kill_switch, plain, rules, runs

if TYPE_CHECKING:
    from clearance.server.webhooks import WebhookSettings

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "from_env"]

log = logging.getLogger("clearance.server")

DEFAULT_MAX_BODY_BYTES = 1_000_000

DESCRIPTION = """\
The clearance control plane: one shared engine (rules, rate limits, approvals, memory, audit)
for many agents. Every operation of the embedded `Engine` is here; `RemoteEngine` speaks it.

**Auth.** `Authorization: Bearer <API key>`. Roles: `agent` (decide, claim, record, report,
suspended runs), `approver` (read; resolve approvals as its own identity), `admin` (everything).
Refusals are 401/403 and are written to the audit trail.

**Errors.** Every status >= 400 has the body
`{"error": {"type", "message", "status", "field", "correlation_id"}}`.

**Retries.** POST/PUT/DELETE accept an `Idempotency-Key` header: a retry with the same key gets
the first answer and runs nothing twice.
"""

#: The route modules, each mounted under ``/v1``.
ROUTERS = (health, plain, decisions, approvals, rules, kill_switch, audit, runs, keys)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text}
    for code, text in ((400, "The body could not be parsed"), (401, "No valid API key"), (403, "The key's role or identity may not do this"),
                       (404, "Unknown id"), (409, "Conflicts with what is recorded"),
                       (413, "Body too large"), (422, "Invalid request"),
                       (429, "Too many failed authentications from this address or for this key; retry after Retry-After"))  # fmt: skip
}


def create_app(
    engine: Engine | str | Path | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: bool = True,
    close_engine: bool | None = None,
    webhooks: WebhookSettings | None = None,
    freeze_gc: bool = False,
    metrics_key: str | None = None,
    memory: MemorySettings | None = None,
    retention: RetentionSettings | None = None,
    auth_failures_per_minute: int | None = None,
    dashboard: bool = True,
    session_secret: str | None = None,
) -> FastAPI:
    """The HTTP API over ``engine`` (an :class:`Engine`, or a store location for one).

    Given a location, the engine signs audit checkpoints with ``CLEARANCE_ANCHOR_KEY`` every
    ``CLEARANCE_CHECKPOINT_EVERY`` events when they are set (``clearance serve --anchor-key``).

    ``auth_failures_per_minute`` (else ``CLEARANCE_AUTH_FAILURES_PER_MINUTE``, default 30) is how
    many failed authentications a client address may make with one key prefix before it is
    answered 429 without a lookup.

    ``metrics_key`` (else ``CLEARANCE_METRICS_KEY``) puts ``/metrics`` behind a key: that
    bearer token, or any admin API key. Without one, ``/metrics`` answers anybody.

    With ``webhooks``, a background task sends approval events to those URLs
    (:mod:`clearance.server.webhooks`) for as long as the app runs.

    ``freeze_gc`` is for a process that exists to serve this app (``clearance serve``): once
    started, everything alive is moved out of the garbage collector's sight (``gc.freeze``),
    so that its full collections no longer walk the modules, schemas and rebuilt memory, which
    held the event loop for 20-80 ms each here, several times a minute under load.

    ``dashboard`` serves the web dashboard at ``/`` (:mod:`clearance.server.dashboard`); its
    session cookies are signed with ``session_secret`` (else ``CLEARANCE_SESSION_SECRET``, else
    a random key made now).

    ``memory`` says how memory warms up at start and how often it is saved (see
    :mod:`clearance.server.warmup`; default: from the environment, else wait for it and save
    every ten minutes and at shutdown). ``retention``: prune what is older than so many days,
    hourly (:mod:`clearance.server.retention`; default: from the environment, else never)."""
    owns = not isinstance(engine, Engine)
    eng = engine if isinstance(engine, Engine) else Engine(engine, **anchor_settings())
    close = owns if close_engine is None else close_engine

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = loop = asyncio.get_running_loop()
        # Approvals resolved through any replica wake this one's waiters (PostgreSQL; else polling).
        app.state.approval_watcher = watcher = eng.watch_approvals(
            lambda approval_id: loop.call_soon_threadsafe(approvals.wake, app, approval_id))
        # Memory loaded (or rebuilt from the audit log) before the first request, not during it,
        # unless the settings say to answer by rules alone meanwhile.
        lifecycle = MemoryLifecycle(eng, memory if memory is not None else MemorySettings.resolve())
        await lifecycle.start()
        pruning.start()
        if freeze_gc:
            gc.collect()  # what is garbage already is collected, not frozen with the rest
            gc.freeze()
        sender = app.state.webhooks
        if sender is not None:
            await sender.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            if sender is not None:
                await sender.stop()
            app.state.decisions.stop()  # the group-commit writer, before the engine closes
            app.state.refusals.flush()
            await pruning.stop()
            await lifecycle.stop()  # the snapshot at shutdown
            if close:
                eng.close()

    pruning = RetentionTask(eng, retention if retention is not None else RetentionSettings.resolve())  # refused now, not later
    app = _App(title="clearance", version=__version__, description=DESCRIPTION, lifespan=lifespan,
               responses=_ERRORS, docs_url="/docs", redoc_url=None, openapi_url="/v1/openapi.json")  # fmt: skip
    app.state.engine = eng
    app.state.keys = eng.keys
    app.state.refusals = Refusals(eng.record_refusal)
    app.state.throttle = AuthThrottle(auth_failures_per_minute)
    app.state.approval_waiters = {}
    app.state.approval_watcher = None
    app.state.approval_listeners = set()  # woken when any approval is answered here (the dashboard's live list)
    app.state.metrics = None
    app.state.metrics_key = metrics_key if metrics_key is not None else os.environ.get("CLEARANCE_METRICS_KEY") or None
    app.state.webhooks = None
    observe = None
    if metrics:
        try:
            from clearance.server.metrics import Metrics
        except ImportError:  # pragma: no cover - prometheus_client is in the server extra
            log.info("prometheus_client is not installed; /metrics is off")
        else:
            app.state.metrics = Metrics()
            observe = app.state.metrics.observe_request
            app.include_router(app.state.metrics.router())
    if webhooks is not None:
        from clearance.server.webhooks import ApprovalWebhookSender

        on_result = app.state.metrics.observe_webhook if app.state.metrics is not None else None
        app.state.webhooks = ApprovalWebhookSender(eng, webhooks, on_result=on_result)
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router, prefix="/v1", dependencies=[Depends(printable_request)])
    if dashboard:
        try:
            from clearance.server.dashboard import mount
        except ImportError as exc:  # pragma: no cover - jinja2 and itsdangerous are in the server extra
            log.warning("the dashboard is off: %s is not installed (pip install 'clearance[server]')", exc.name)
        else:
            mount(app, secret=session_secret)
    app.add_middleware(IdempotencyMiddleware, keys=app.state.keys, kept=eng.idempotency)
    app.state.decisions = decisions.DecisionEndpoint(eng, app.state.keys, app.state.metrics, app.state.webhooks)
    app.add_middleware(RequestContext, max_body_bytes=max_body_bytes, observe=observe)
    # POST /v1/decisions meets the hot path before FastAPI's middleware stack, and takes the
    # whole stack (with this same context) only when the hot path gives it back.
    app.front = RequestContext(functools.partial(FastAPI.__call__, app), max_body_bytes=max_body_bytes, observe=observe,
                               fast=app.state.decisions)  # fmt: skip
    return app


class _App(FastAPI):
    """FastAPI, with ``POST /v1/decisions`` handed to :attr:`front` before the middleware stack:
    the layers of error handling, telemetry and body limits FastAPI and Starlette put around
    every request cost more than a decision's HTTP handling otherwise does. The front is a
    :class:`RequestContext` (correlation id, size limit, metrics, access log, an envelope for
    unexpected errors) with the hot path; what it gives back goes through the whole stack."""

    front: RequestContext | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        throttle = self.state.throttle
        if (throttle.throttling and scope["type"] == "http" and scope["path"].startswith(_KEYED)
                and scope["path"] not in _OPEN):  # fmt: skip
            token = _bearer(scope)
            wait = throttle.early(scope["client"][0] if scope.get("client") else None, token)
            if wait is not None and not self._scraper(scope, token):
                exc = throttled(self.state, wait)  # answered here, before middleware, routing or the body
                await _early_answer(exc.status, exc.type, exc.message, exc.retry_after)(scope, receive, send)
                return
        front = self.front
        if front is not None and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == _FAST_PATH:
            scope["app"] = self  # as Starlette sets it for what it routes (refusals read the engine from it)
            await front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def _scraper(self, scope: Any, token: str) -> bool:
        key = self.state.metrics_key
        return bool(key) and scope["path"] == "/metrics" and hmac.compare_digest(token.encode(), key.encode())


@functools.lru_cache(maxsize=128)
def _early_answer(status: int, type_: str, message: str, retry_after: int | None) -> Any:
    """The outermost layer's refusal, rendered once per distinct answer (they differ only in
    the seconds to wait) and sent as often as asked: a flood's cost is the sending."""
    return errors.envelope(status, type_, message, headers=None if retry_after is None else {"Retry-After": str(retry_after)})


_FAST_PATH = decisions.DecisionEndpoint.path
#: Paths that take a key (the API and /metrics) and, among them, those that do not.
_KEYED = ("/v1/", "/metrics")
_OPEN = frozenset({"/v1/health", "/v1/openapi.json"})


def _bearer(scope: Any) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return ""


def from_env() -> FastAPI:
    """The app for ``CLEARANCE_DB`` (uvicorn factory, one per worker process of ``clearance serve --workers``),
    with webhooks from ``CLEARANCE_WEBHOOK_URLS`` and ``CLEARANCE_WEBHOOK_SECRET``."""
    import os

    from clearance.server.webhooks import WebhookSettings

    limit = int(os.environ.get("CLEARANCE_MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)
    return create_app(os.environ.get("CLEARANCE_DB"), max_body_bytes=limit, webhooks=WebhookSettings.resolve(),
                      freeze_gc=True)  # fmt: skip
