"""Prometheus metrics at ``/metrics`` (when ``prometheus_client`` is installed).

- ``clearance_http_requests_total{method,route,status}`` and
  ``clearance_http_request_seconds{method,route}``: every request.
- ``clearance_decisions_total{result,rule}``: decisions made through this server, by verdict and
  by each rule that fired (``rule="-"`` when none did).
- ``clearance_decision_seconds``: time to a durable decision, as the server measures it.
- ``clearance_outcomes_total{status}``: outcomes reported through this server.
- ``clearance_approvals_pending`` and ``clearance_approval_oldest_pending_seconds``: the
  approval queue, read from the store at scrape time.
- ``clearance_webhook_deliveries_total{event,outcome}``: webhook attempts made by this server,
  by event type and outcome (``delivered``, ``retry``, ``failed``); and
  ``clearance_webhook_backlog``: deliveries not yet delivered or given up, at scrape time.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from clearance.model import ApprovalStatus, Decision, Outcome, utcnow
from clearance.policy.rules import remember  # label sets are few (routes, statuses, rules)

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("clearance_http_requests", "HTTP requests.", ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("clearance_http_request_seconds", "HTTP request latency.", ["method", "route"],
                                         registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))  # fmt: skip
        self.decisions = Counter("clearance_decisions", "Decisions by result and fired rule.", ["result", "rule"], registry=r)
        self.decision_seconds = Histogram("clearance_decision_seconds", "Time to a durable decision.", registry=r,
                                          buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1))  # fmt: skip
        self.outcomes = Counter("clearance_outcomes", "Outcomes reported.", ["status"], registry=r)
        self.auth_failures = Counter("clearance_auth_failures", "Failed authentications: missing or invalid key, "
                                     "or throttled (429) after too many.", ["outcome"], registry=r)  # fmt: skip
        self.pending = Gauge("clearance_approvals_pending", "Pending approvals (at scrape time).", registry=r)
        self.oldest = Gauge("clearance_approval_oldest_pending_seconds", "Age of the oldest pending approval.", registry=r)
        self.webhooks = Counter("clearance_webhook_deliveries", "Webhook attempts by event and outcome.", ["event", "outcome"],
                                registry=r)  # fmt: skip
        self.webhook_backlog = Gauge("clearance_webhook_backlog", "Webhook deliveries still to make (at scrape time).",
                                     registry=r)  # fmt: skip
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._decision_children: dict[tuple[str, str], Any] = {}
        self._auth_children: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children are looked up once per label set: ``labels()`` validates and
        # locks on every call, which cost more than the observation itself.
        children = self._request_children.get((method, route, status))
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.request_seconds.labels(method, route))
            remember(self._request_children, (method, route, status), children)
        children[0].inc()
        children[1].observe(seconds)

    def observe_decision(self, decision: Decision, seconds: float) -> None:
        self.decision_seconds.observe(seconds)
        result = decision.result.value
        for rule in [m.rule_id for m in decision.matched_rules] or ["-"]:
            child = self._decision_children.get((result, rule))
            if child is None:
                child = self.decisions.labels(result, rule)
                remember(self._decision_children, (result, rule), child)
            child.inc()

    def observe_auth_failure(self, outcome: str) -> None:
        """One failed authentication: ``missing``, ``invalid`` or ``throttled`` (a flood's every request)."""
        child = self._auth_children.get(outcome)
        if child is None:
            child = self._auth_children[outcome] = self.auth_failures.labels(outcome)
        child.inc()

    def observe_outcome(self, outcome: Outcome) -> None:
        self.outcomes.labels(outcome.status.value).inc()

    def observe_webhook(self, event: str, outcome: str) -> None:
        self.webhooks.labels(event, outcome).inc()

    def router(self) -> APIRouter:
        router = APIRouter(tags=["health"])

        @router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics", include_in_schema=True)
        def metrics(request: Request) -> PlainTextResponse:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            _check_scraper(request)

            engine: Any = request.app.state.engine
            pending = engine.list_approvals(ApprovalStatus.pending, limit=10_000)
            self.pending.set(len(pending))
            self.oldest.set(max(((utcnow() - a.created_at).total_seconds() for a in pending), default=0.0))
            dispatcher = getattr(request.app.state, "webhooks", None)
            if dispatcher is not None:
                self.webhook_backlog.set(dispatcher.backlog())
            return PlainTextResponse(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return router


def _check_scraper(request: Request) -> None:
    """With a metrics key set, only that key or an admin API key may scrape (refusals audited)."""
    key = request.app.state.metrics_key
    if key is None:
        return
    from clearance.server.auth import bearer_token, identify, refuse

    token = bearer_token(request.headers.get("authorization"))
    if token and hmac.compare_digest(token.encode(), key.encode()):
        return
    principal = identify(request.app.state, request.client.host if request.client else None, token)
    if principal is None:
        raise refuse(request, 401, "/metrics needs the metrics key or an admin API key")
    if principal.role != "admin":
        raise refuse(request, 403, f"the {principal.role} role may not read /metrics (needs the metrics key or admin)", principal)


def timed() -> float:
    return time.perf_counter()
