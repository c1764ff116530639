"""The engine over HTTP: :class:`RemoteEngine` and :class:`AsyncRemoteEngine`.

Same methods, arguments and return types as :class:`~clearance.Engine` and
:class:`~clearance.AsyncEngine`, spoken to a ``clearance serve`` server, so code above the engine
(``GuardedOpenAI(engine=RemoteEngine(url, api_key=...))``) does not know which one it holds.

- One keep-alive connection pool per engine (httpx), with connect/read timeouts.
- Retries with exponential backoff on connection errors, timeouts, 429, 502, 503 and 504: GETs
  as they are, and every POST/PUT with an ``Idempotency-Key`` (one per logical call, the same on
  each retry), which the server honours, so a retried decision is answered, not decided again.
- Refusals come back as the same exceptions the embedded engine raises (``NotFound``,
  ``ApprovalNotPending``, ``AlreadyClaimed``, ``RuleError``...). When the server cannot be
  reached the call raises :class:`EngineUnavailable`: nothing here is best effort, so a guard
  fails closed.
- Who did something is the API key's identity: ``applied_by`` and ``by`` are not sent, an agent
  key decides as its own actor, and only an admin key may name an approver other than itself.
- ``evaluate_batch`` and ``wait_approval`` exist only here (the server composes them).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import TypeAdapter

from clearance import errors as E
from clearance._version import __version__
from clearance.engine.audit import AuditReport
from clearance.engine.core import PolicyInfo
from clearance.model import (
    Action,
    Approval,
    ApprovalStatus,
    Decision,
    Event,
    Execution,
    ExecutionStatus,
    KillSwitch,
    Outcome,
    OutcomeStatus,
    Precedent,
)
from clearance.policy import RuleFile, RuleSet, load_rules
from clearance.retry_after import retry_after_seconds
from clearance.telemetry import trace_headers

__all__ = ["AsyncRemoteEngine", "EngineUnavailable", "RemoteEngine", "RemoteError"]


class RemoteError(E.ClearanceError):
    """The server refused in a way that has no engine exception (auth, limits, validation)."""

    def __init__(self, message: str, *, status: int, type: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.field = status, type, field


class EngineUnavailable(RemoteError):
    """The server could not be reached or kept failing; the operation did not complete."""


_TYPES: dict[str, type[E.ClearanceError]] = {
    "unknown_request": E.UnknownRequest, "not_found": E.NotFound, "approval_expired": E.ApprovalExpired,
    "approval_not_pending": E.ApprovalNotPending, "duplicate_vote": E.DuplicateVote,
    "already_claimed": E.AlreadyClaimed, "not_approved": E.NotApproved, "arguments_mismatch": E.ArgumentsMismatch,
    "run_state_tampered": E.RunStateTampered, "run_busy": E.RunBusy, "conflict": E.ConflictError,
    "rule_error": E.RuleError,
}  # fmt: skip
_RETRY_STATUS = frozenset({429, 502, 503, 504})

_DECISIONS = TypeAdapter(list[Decision])
_APPROVALS = TypeAdapter(list[Approval])
_OUTCOMES = TypeAdapter(list[Outcome])
_SWITCHES = TypeAdapter(list[KillSwitch])
_EVENTS = TypeAdapter(list[Event])


def _error(body: dict[str, Any], status: int) -> E.ClearanceError:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return RemoteError(f"the server answered {status}", status=status, type="unknown")
    kind, message = str(err.get("type", "unknown")), str(err.get("message", ""))
    cls = _TYPES.get(kind)
    if cls is E.UnknownRequest:
        exc: E.ClearanceError = E.UnknownRequest.__new__(E.UnknownRequest)
        Exception.__init__(exc, message)
        exc.request_id = message.split("'")[1] if message.count("'") >= 2 else ""  # type: ignore[attr-defined]
        return exc
    if cls is not None:
        return cls(message)
    return RemoteError(message, status=status, type=kind, field=err.get("field"))


def _action(action: Action | Mapping[str, Any]) -> dict[str, Any]:
    a = action if isinstance(action, Action) else Action.model_validate(action)
    return a.model_dump(mode="json", exclude_unset=True) | {"tool": a.tool}


def _rules_body(rules: RuleFile | str | Path) -> dict[str, Any]:
    source = rules if isinstance(rules, RuleFile) else load_rules(rules)
    return {"document": source.model_dump(mode="json", exclude_none=True)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _Spec:
    """One call: method, path, body/params, and whether it may be retried."""

    __slots__ = ("method", "path", "json", "params", "timeout", "idempotent")

    def __init__(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
                 timeout: float | None = None) -> None:  # fmt: skip
        self.method, self.path, self.json, self.timeout = method, path, json, timeout
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.idempotent = True  # GETs by nature; writes by their Idempotency-Key


class _Calls:
    """The HTTP vocabulary of the engine, shared by the sync and async clients: each method
    returns a request spec and a function that turns the JSON answer into the engine's type."""

    @staticmethod
    def evaluate(action: Action | Mapping[str, Any]) -> tuple[_Spec, Any]:
        return _Spec("POST", "/v1/decisions", _action(action)), Decision.model_validate

    @staticmethod
    def evaluate_batch(actions: Sequence[Action | Mapping[str, Any]]) -> tuple[_Spec, Any]:
        return (_Spec("POST", "/v1/decisions/batch", {"actions": [_action(a) for a in actions]}),
                lambda b: _DECISIONS.validate_python(b["decisions"]))  # fmt: skip

    @staticmethod
    def get_decision(request_id: str) -> tuple[_Spec, Any]:
        return _Spec("GET", f"/v1/decisions/{_seg(request_id)}"), Decision.model_validate

    @staticmethod
    def precedents(request_id: str) -> tuple[_Spec, Any]:
        return (_Spec("GET", f"/v1/decisions/{_seg(request_id)}/precedents"),
                lambda b: [Precedent.model_validate(p) for p in b["precedents"]])  # fmt: skip

    @staticmethod
    def get_action(request_id: str) -> tuple[_Spec, Any]:
        return _Spec("GET", f"/v1/decisions/{_seg(request_id)}/action"), Action.model_validate

    @staticmethod
    def claim_execution(request_id: str, claimant: str, arguments: Mapping[str, Any] | None) -> tuple[_Spec, Any]:
        body = {"claimant": claimant, "arguments": dict(arguments) if arguments is not None else None}
        return _Spec("POST", f"/v1/decisions/{_seg(request_id)}/claim", body), Execution.model_validate

    @staticmethod
    def record_execution(request_id: str, status: Any, result_summary: Any, error: str | None) -> tuple[_Spec, Any]:
        body = {"status": ExecutionStatus(status).value, "result_summary": result_summary, "error": error}
        return _Spec("POST", f"/v1/decisions/{_seg(request_id)}/execution", body), Execution.model_validate

    @staticmethod
    def record_executions(reports: Sequence[tuple[str, Any, Any, str | None]]) -> tuple[_Spec, Any]:
        body = {"reports": [{"request_id": r, "status": ExecutionStatus(s).value, "result_summary": summary, "error": err}
                            for r, s, summary, err in reports]}  # fmt: skip

        def parse(b: dict[str, Any]) -> list[Execution | E.ClearanceError]:
            return [Execution.model_validate(r["execution"]) if r["ok"] else _error({"error": r["error"]}, r["error"]["status"])
                    for r in b["results"]]  # fmt: skip

        return _Spec("POST", "/v1/executions/batch", body), parse

    @staticmethod
    def get_execution(request_id: str) -> tuple[_Spec, Any]:
        return (_Spec("GET", f"/v1/decisions/{_seg(request_id)}/execution"),
                lambda b: None if b is None else Execution.model_validate(b))  # fmt: skip

    @staticmethod
    def report_outcome(request_id: str, status: Any, severity: float, cost: float, description: str | None,
                       observed_at: datetime | None, reported_by: str | None, event_id: str | None) -> tuple[_Spec, Any]:  # fmt: skip
        body = {"status": OutcomeStatus(status).value, "severity": severity, "cost": cost, "description": description,
                "observed_at": _iso(observed_at), "reported_by": reported_by, "event_id": event_id}  # fmt: skip
        return _Spec("POST", f"/v1/decisions/{_seg(request_id)}/outcomes", body), Outcome.model_validate

    @staticmethod
    def outcomes(request_id: str) -> tuple[_Spec, Any]:
        return _Spec("GET", f"/v1/decisions/{_seg(request_id)}/outcomes"), _OUTCOMES.validate_python

    @staticmethod
    def list_approvals(status: Any, limit: int) -> tuple[_Spec, Any]:
        value = "all" if status is None else ApprovalStatus(status).value
        return _Spec("GET", "/v1/approvals", params={"status": value, "limit": limit}), _APPROVALS.validate_python

    @staticmethod
    def get_approval(approval_id: str) -> tuple[_Spec, Any]:
        return _Spec("GET", f"/v1/approvals/{_seg(approval_id)}"), Approval.model_validate

    @staticmethod
    def wait_approval(approval_id: str, timeout_seconds: float) -> tuple[_Spec, Any]:
        return (_Spec("GET", f"/v1/approvals/{_seg(approval_id)}/wait", params={"timeout_seconds": timeout_seconds},
                      timeout=timeout_seconds + 30), Approval.model_validate)  # fmt: skip

    @staticmethod
    def resolve_approval(approval_id: str, resolution: Any, approver: str, comment: str | None) -> tuple[_Spec, Any]:
        value = ApprovalStatus(resolution)
        if value not in (ApprovalStatus.approved, ApprovalStatus.rejected):
            raise ValueError("resolution must be 'approved' or 'rejected'")
        if not approver:
            raise ValueError("an approver identity is required")
        body = {"resolution": value.value, "approver": approver, "comment": comment}
        return _Spec("POST", f"/v1/approvals/{_seg(approval_id)}/resolve", body), Approval.model_validate

    @staticmethod
    def expire_approvals() -> tuple[_Spec, Any]:
        return _Spec("POST", "/v1/approvals/expire", {}), _APPROVALS.validate_python

    @staticmethod
    def apply_rules(rules: RuleFile | str | Path, applied_by: str | None) -> tuple[_Spec, Any]:
        # The server records the key's identity as who applied the rules; applied_by is not sent.
        return _Spec("PUT", "/v1/rules", _rules_body(rules)), lambda b: PolicyInfo(**b)

    @staticmethod
    def current_rules() -> tuple[_Spec, Any]:
        def parse(b: dict[str, Any]) -> RuleSet:
            if b["policy_version"] == "0" and not b["rules"]:
                return RuleSet.empty()
            source = RuleFile.model_validate({"version": b.get("version", 1), "rules": b["rules"]})
            return RuleSet.compile(source, b["policy_version"], b.get("rule_versions") or {})

        return _Spec("GET", "/v1/rules"), parse

    @staticmethod
    def policy_versions() -> tuple[_Spec, Any]:
        def parse(b: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**r, "applied_at": datetime.fromisoformat(r["applied_at"])} for r in b]

        return _Spec("GET", "/v1/rules/versions"), parse

    @staticmethod
    def activate_kill_switch(domain: str | None, tool: str | None, actor: str | None, reason: str | None) -> tuple[_Spec, Any]:
        body = {"domain": domain, "tool": tool, "actor": actor, "reason": reason}
        return _Spec("POST", "/v1/kill-switches", body), KillSwitch.model_validate

    @staticmethod
    def deactivate_kill_switch(domain: str | None, tool: str | None, actor: str | None) -> tuple[_Spec, Any]:
        body = {"domain": domain, "tool": tool, "actor": actor}
        return _Spec("POST", "/v1/kill-switches/deactivate", body), lambda b: bool(b["deactivated"])

    @staticmethod
    def kill_switches() -> tuple[_Spec, Any]:
        return _Spec("GET", "/v1/kill-switches"), _SWITCHES.validate_python

    @staticmethod
    def save_run(run_id: str, state: dict[str, Any], approval_ids: list[str]) -> tuple[_Spec, Any]:
        body = {"state": state, "approval_ids": list(approval_ids)}
        return _Spec("PUT", f"/v1/runs/{_seg(run_id)}", body), lambda b: None

    @staticmethod
    def take_run(approval_id: str, wait_seconds: float) -> tuple[_Spec, Any]:
        body = {"approval_id": approval_id, "wait_seconds": wait_seconds}
        return _Spec("POST", "/v1/runs/take", body, timeout=wait_seconds + 30), lambda b: dict(b["state"])

    @staticmethod
    def release_run(run_id: str) -> tuple[_Spec, Any]:
        return _Spec("POST", f"/v1/runs/{_seg(run_id)}/release", {}), lambda b: None

    @staticmethod
    def audit_events(filters: dict[str, Any]) -> tuple[_Spec, Any]:
        return _Spec("GET", "/v1/audit/events", params=filters), _EVENTS.validate_python

    @staticmethod
    def verify_audit() -> tuple[_Spec, Any]:
        return _Spec("GET", "/v1/audit/verify"), lambda b: AuditReport(**b)


def _seg(value: str) -> str:
    from urllib.parse import quote

    if not value:
        raise E.NotFound("an empty id names nothing")
    return quote(value, safe="")


class _Base:
    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0, connect_timeout: float = 5.0,
                 retries: int = 3, backoff_seconds: float = 0.1, max_backoff_seconds: float = 2.0,
                 transport: Any = None) -> None:  # fmt: skip
        if not api_key:
            raise ValueError("an API key is required (clearance keys create ...)")
        self.url = url.rstrip("/")
        self.retries, self.backoff_seconds, self.max_backoff_seconds = retries, backoff_seconds, max_backoff_seconds
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": f"clearance-remote/{__version__}",
                         "Accept": "application/json"}  # fmt: skip
        self._api_key = api_key
        #: An httpx transport to use instead of the network (``httpx.ASGITransport`` for the async
        #: client, or any ``httpx.BaseTransport``): tests serve the app in process through it.
        self._transport = transport
        self._options = {"timeout": timeout, "connect_timeout": connect_timeout, "retries": retries,
                         "backoff_seconds": backoff_seconds, "max_backoff_seconds": max_backoff_seconds}  # fmt: skip

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = retry_after_seconds(response.headers) if response is not None else None
        if after is not None:
            return min(after, self.max_backoff_seconds)
        base = min(self.backoff_seconds * (2**attempt), self.max_backoff_seconds)
        return base * (0.5 + random.random() / 2)

    def _headers_for(self, spec: _Spec, idem: str | None) -> dict[str, str]:
        # Taken in the caller's context (the async client's too), so the server's decision span
        # is a child of whatever span the agent has open around this call.
        headers = trace_headers()
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return headers

    @staticmethod
    def _result(spec: _Spec, parse: Any, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            raise RemoteError(f"the server answered {response.status_code} without JSON", status=response.status_code,
                              type="bad_response") from None  # fmt: skip
        if response.status_code >= 400:
            raise _error(body, response.status_code)
        return parse(body)

    def _timeout_for(self, spec: _Spec) -> httpx.Timeout:
        return self._timeout if spec.timeout is None else httpx.Timeout(spec.timeout, connect=self._timeout.connect)


class RemoteEngine(_Base):
    """A blocking engine client. Thread-safe: share one between threads."""

    def __init__(self, url: str, api_key: str, **kw: Any) -> None:
        super().__init__(url, api_key, **kw)
        self._client = httpx.Client(base_url=self.url, headers=self._headers, timeout=self._timeout, transport=self._transport,
                                    limits=httpx.Limits(max_keepalive_connections=32, max_connections=64))  # fmt: skip

    def aio(self) -> AsyncRemoteEngine:
        """The asyncio twin, on the same server with the same key and options."""
        return AsyncRemoteEngine(self.url, self._api_key, **self._options)  # type: ignore[arg-type]

    def _call(self, spec: _Spec, parse: Any) -> Any:
        idem = uuid.uuid4().hex if spec.method != "GET" else None
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self._client.request(spec.method, spec.path, json=spec.json if spec.method != "GET" else None,
                                                params=spec.params or None, headers=self._headers_for(spec, idem),
                                                timeout=self._timeout_for(spec))  # fmt: skip
            except (httpx.TransportError,) as exc:
                last = exc
            else:
                if response.status_code not in _RETRY_STATUS:
                    return self._result(spec, parse, response)
                last = _error(_json(response), response.status_code)
            if attempt < self.retries:
                time.sleep(self._delay(attempt, response))
        if isinstance(last, RemoteError) and not isinstance(last, EngineUnavailable) and last.status not in _RETRY_STATUS:
            raise last
        raise EngineUnavailable(f"clearance server at {self.url} unavailable after {self.retries + 1} attempts: {last}",
                                status=getattr(last, "status", 0), type="unavailable") from last  # fmt: skip

    # -- the engine interface -------------------------------------------------------------------
    def evaluate(self, action: Action | Mapping[str, Any]) -> Decision:
        return self._call(*_Calls.evaluate(action))

    def evaluate_batch(self, actions: Sequence[Action | Mapping[str, Any]]) -> list[Decision]:
        return self._call(*_Calls.evaluate_batch(actions))

    def get_decision(self, request_id: str) -> Decision:
        return self._call(*_Calls.get_decision(request_id))

    def get_action(self, request_id: str) -> Action:
        return self._call(*_Calls.get_action(request_id))

    def precedents(self, request_id: str) -> list[Precedent]:
        """The past cases a decision rested on, as it recorded them."""
        return self._call(*_Calls.precedents(request_id))

    def claim_execution(self, request_id: str, *, claimant: str, arguments: Mapping[str, Any] | None = None) -> Execution:
        return self._call(*_Calls.claim_execution(request_id, claimant, arguments))

    def record_execution(self, request_id: str, status: ExecutionStatus | str, result_summary: Any = None,
                         error: str | None = None) -> Execution:  # fmt: skip
        return self._call(*_Calls.record_execution(request_id, status, result_summary, error))

    def record_executions(self, reports: Sequence[tuple[str, ExecutionStatus | str, Any, str | None]]) -> list[Execution | E.ClearanceError]:
        if not reports:
            return []
        return self._call(*_Calls.record_executions(reports))

    def get_execution(self, request_id: str) -> Execution | None:
        return self._call(*_Calls.get_execution(request_id))

    def report_outcome(self, request_id: str, status: OutcomeStatus | str, *, severity: float = 0.0, cost: float = 0.0,
                       description: str | None = None, observed_at: datetime | None = None,
                       reported_by: str | None = None, event_id: str | None = None) -> Outcome:  # fmt: skip
        return self._call(*_Calls.report_outcome(request_id, status, severity, cost, description, observed_at, reported_by, event_id))

    def outcomes(self, request_id: str) -> list[Outcome]:
        return self._call(*_Calls.outcomes(request_id))

    def list_approvals(self, status: ApprovalStatus | str | None = ApprovalStatus.pending, *, limit: int = 100) -> list[Approval]:
        return self._call(*_Calls.list_approvals(status, limit))

    def get_approval(self, approval_id: str) -> Approval:
        return self._call(*_Calls.get_approval(approval_id))

    def wait_approval(self, approval_id: str, *, timeout_seconds: float = 30.0) -> Approval:
        """Block until the approval is resolved or expires (or the timeout passes, still pending)."""
        return self._call(*_Calls.wait_approval(approval_id, timeout_seconds))

    def resolve_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | ApprovalStatus | str, *,
                         approver: str, comment: str | None = None) -> Approval:  # fmt: skip
        return self._call(*_Calls.resolve_approval(approval_id, resolution, approver, comment))

    def expire_approvals(self) -> list[Approval]:
        return self._call(*_Calls.expire_approvals())

    def apply_rules(self, rules: RuleFile | str | Path, *, applied_by: str | None = None) -> PolicyInfo:
        return self._call(*_Calls.apply_rules(rules, applied_by))

    def current_rules(self) -> RuleSet:
        return self._call(*_Calls.current_rules())

    def policy_versions(self) -> list[dict[str, Any]]:
        return self._call(*_Calls.policy_versions())

    def activate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                             reason: str | None = None, by: str | None = None) -> KillSwitch:  # fmt: skip
        return self._call(*_Calls.activate_kill_switch(domain, tool, actor, reason))

    def deactivate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                               by: str | None = None) -> bool:  # fmt: skip
        return self._call(*_Calls.deactivate_kill_switch(domain, tool, actor))

    def kill_switches(self) -> list[KillSwitch]:
        return self._call(*_Calls.kill_switches())

    def save_run(self, run_id: str, state: dict[str, Any], approval_ids: list[str]) -> None:
        self._call(*_Calls.save_run(run_id, state, approval_ids))

    def take_run(self, approval_id: str, *, wait_seconds: float = 30.0) -> dict[str, Any]:
        return self._call(*_Calls.take_run(approval_id, wait_seconds))

    def release_run(self, run_id: str) -> None:
        self._call(*_Calls.release_run(run_id))

    def audit_events(self, *, request_id: str | None = None, trace_id: str | None = None, type: str | None = None,
                     after_seq: int = 0, limit: int = 100) -> list[Event]:  # fmt: skip
        filters = {"request_id": request_id, "trace_id": trace_id, "type": type, "after_seq": after_seq, "limit": limit}
        return self._call(*_Calls.audit_events(filters))

    def verify_audit(self) -> AuditReport:
        return self._call(*_Calls.verify_audit())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRemoteEngine(_Base):
    """The asyncio engine client: the same operations as coroutines (like :class:`AsyncEngine`)."""

    def __init__(self, url: str, api_key: str, **kw: Any) -> None:
        super().__init__(url, api_key, **kw)
        self._client = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self._timeout,
                                         transport=self._transport, limits=httpx.Limits(max_keepalive_connections=32, max_connections=64))  # fmt: skip

    async def _call(self, spec: _Spec, parse: Any) -> Any:
        idem = uuid.uuid4().hex if spec.method != "GET" else None
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = await self._client.request(spec.method, spec.path, json=spec.json if spec.method != "GET" else None,
                                                      params=spec.params or None, headers=self._headers_for(spec, idem),
                                                      timeout=self._timeout_for(spec))  # fmt: skip
            except httpx.TransportError as exc:
                last = exc
            else:
                if response.status_code not in _RETRY_STATUS:
                    return self._result(spec, parse, response)
                last = _error(_json(response), response.status_code)
            if attempt < self.retries:
                await asyncio.sleep(self._delay(attempt, response))
        raise EngineUnavailable(f"clearance server at {self.url} unavailable after {self.retries + 1} attempts: {last}",
                                status=getattr(last, "status", 0), type="unavailable") from last  # fmt: skip

    async def evaluate(self, action: Action | Mapping[str, Any]) -> Decision:
        return await self._call(*_Calls.evaluate(action))

    async def evaluate_batch(self, actions: Sequence[Action | Mapping[str, Any]]) -> list[Decision]:
        return await self._call(*_Calls.evaluate_batch(actions))

    async def get_decision(self, request_id: str) -> Decision:
        return await self._call(*_Calls.get_decision(request_id))

    async def get_action(self, request_id: str) -> Action:
        return await self._call(*_Calls.get_action(request_id))

    async def precedents(self, request_id: str) -> list[Precedent]:
        return await self._call(*_Calls.precedents(request_id))

    async def claim_execution(self, request_id: str, *, claimant: str, arguments: Mapping[str, Any] | None = None) -> Execution:
        return await self._call(*_Calls.claim_execution(request_id, claimant, arguments))

    async def record_execution(self, request_id: str, status: ExecutionStatus | str, result_summary: Any = None,
                               error: str | None = None) -> Execution:  # fmt: skip
        return await self._call(*_Calls.record_execution(request_id, status, result_summary, error))

    async def record_executions(self, reports: Sequence[tuple[str, ExecutionStatus | str, Any, str | None]]) -> list[Execution | E.ClearanceError]:
        if not reports:
            return []
        return await self._call(*_Calls.record_executions(reports))

    async def get_execution(self, request_id: str) -> Execution | None:
        return await self._call(*_Calls.get_execution(request_id))

    async def report_outcome(self, request_id: str, status: OutcomeStatus | str, *, severity: float = 0.0, cost: float = 0.0,
                             description: str | None = None, observed_at: datetime | None = None,
                             reported_by: str | None = None, event_id: str | None = None) -> Outcome:  # fmt: skip
        return await self._call(*_Calls.report_outcome(request_id, status, severity, cost, description, observed_at,
                                                       reported_by, event_id))  # fmt: skip

    async def outcomes(self, request_id: str) -> list[Outcome]:
        return await self._call(*_Calls.outcomes(request_id))

    async def list_approvals(self, status: ApprovalStatus | str | None = ApprovalStatus.pending, *, limit: int = 100) -> list[Approval]:
        return await self._call(*_Calls.list_approvals(status, limit))

    async def get_approval(self, approval_id: str) -> Approval:
        return await self._call(*_Calls.get_approval(approval_id))

    async def wait_approval(self, approval_id: str, *, timeout_seconds: float = 30.0) -> Approval:
        return await self._call(*_Calls.wait_approval(approval_id, timeout_seconds))

    async def resolve_approval(self, approval_id: str, resolution: Literal["approved", "rejected"] | ApprovalStatus | str, *,
                               approver: str, comment: str | None = None) -> Approval:  # fmt: skip
        return await self._call(*_Calls.resolve_approval(approval_id, resolution, approver, comment))

    async def expire_approvals(self) -> list[Approval]:
        return await self._call(*_Calls.expire_approvals())

    async def apply_rules(self, rules: RuleFile | str | Path, *, applied_by: str | None = None) -> PolicyInfo:
        return await self._call(*_Calls.apply_rules(rules, applied_by))

    async def current_rules(self) -> RuleSet:
        return await self._call(*_Calls.current_rules())

    async def policy_versions(self) -> list[dict[str, Any]]:
        return await self._call(*_Calls.policy_versions())

    async def activate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                                   reason: str | None = None, by: str | None = None) -> KillSwitch:  # fmt: skip
        return await self._call(*_Calls.activate_kill_switch(domain, tool, actor, reason))

    async def deactivate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                                     by: str | None = None) -> bool:  # fmt: skip
        return await self._call(*_Calls.deactivate_kill_switch(domain, tool, actor))

    async def kill_switches(self) -> list[KillSwitch]:
        return await self._call(*_Calls.kill_switches())

    async def save_run(self, run_id: str, state: dict[str, Any], approval_ids: list[str]) -> None:
        await self._call(*_Calls.save_run(run_id, state, approval_ids))

    async def take_run(self, approval_id: str, *, wait_seconds: float = 30.0) -> dict[str, Any]:
        return await self._call(*_Calls.take_run(approval_id, wait_seconds))

    async def release_run(self, run_id: str) -> None:
        await self._call(*_Calls.release_run(run_id))

    async def audit_events(self, **filters: Any) -> list[Event]:
        filters = {"after_seq": 0, "limit": 100, **filters}
        return await self._call(*_Calls.audit_events(filters))

    async def verify_audit(self) -> AuditReport:
        return await self._call(*_Calls.verify_audit())

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncRemoteEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}
