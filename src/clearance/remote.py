"""The engine over HTTP: :class:`RemoteEngine` and :class:`AsyncRemoteEngine`.

Derived from the engine's contract (:mod:`clearance.engine.contract`): every operation of
:class:`~clearance.Engine`, with the same arguments and return types, is one generic call to a
``clearance serve`` server, so code above the engine
(``GuardedOpenAI(engine=RemoteEngine(url, api_key=...))``) does not know which one it holds.

- One keep-alive connection pool per engine (httpx), with connect/read timeouts; ``transport=``
  replaces the network (tests serve the app in process through ``httpx.ASGITransport``).
- Retries (tenacity) with exponential backoff and jitter on connection errors, timeouts, 429,
  502, 503 and 504, honouring ``Retry-After``: GETs as they are, and every POST/PUT with an
  ``Idempotency-Key`` (one per logical call, the same on each retry), which the server honours,
  so a retried decision is answered, not decided again.
- Refusals come back as the same exceptions the embedded engine raises (``NotFound``,
  ``ApprovalNotPending``, ``AlreadyClaimed``, ``RuleError``...). When the server cannot be
  reached the call raises :class:`EngineUnavailable`: nothing here is best effort, so a guard
  fails closed.
- Who did something is the API key's identity: ``applied_by`` and ``by`` are not sent, an agent
  key decides as its own actor, and only an admin key may name an approver other than itself.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from clearance import errors as E
from clearance._version import __version__
from clearance.engine.contract import OPERATIONS, AsyncEngineAPI, EngineAPI, Operation, derive, returns
from clearance.model import Action, ApprovalStatus, Execution, ExecutionStatus
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
    "already_claimed": E.AlreadyClaimed, "not_approved": E.NotApproved, "policy_blocks": E.PolicyBlocks, "arguments_mismatch": E.ArgumentsMismatch,
    "run_state_tampered": E.RunStateTampered, "run_busy": E.RunBusy, "illegal_transition": E.IllegalTransition, "conflict": E.ConflictError,
    "rule_error": E.RuleError, "not_yours": E.NotYours,
}  # fmt: skip
_RETRY_STATUS = frozenset({429, 502, 503, 504})


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


class _Busy(Exception):
    """A retryable answer (429, 502-504): retried, and named in EngineUnavailable if it lasts."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(str(_error(_json(response), response.status_code)))
        self.response = response


# -- the wire: how arguments are sent and answers read -------------------------------------------
def _action(action: Action | Mapping[str, Any]) -> dict[str, Any]:
    a = action if isinstance(action, Action) else Action.model_validate(action)
    return a.model_dump(mode="json", exclude_unset=True) | {"tool": a.tool}


def _rules(rules: RuleFile | str | Path) -> dict[str, Any]:
    source = rules if isinstance(rules, RuleFile) else load_rules(rules)
    return source.model_dump(mode="json", exclude_none=True)


def _reports(reports: Sequence[tuple[str, Any, Any, str | None]]) -> list[dict[str, Any]]:
    return [{"request_id": r, "status": ExecutionStatus(s).value, "result_summary": summary, "error": err}
            for r, s, summary, err in reports]  # fmt: skip


def _resolution(value: Any) -> str:
    resolution = ApprovalStatus(value)
    if resolution not in (ApprovalStatus.approved, ApprovalStatus.rejected):
        raise ValueError("resolution must be 'approved' or 'rejected'")
    return resolution.value


def _approver(value: str) -> str:
    if not value:
        raise ValueError("an approver identity is required")
    return value


#: Arguments whose wire form is not their JSON form: ``name -> (wire name, encode)``.
_ENCODE: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "action": ("action", _action),
    "actions": ("actions", lambda actions: [_action(a) for a in actions]),
    "rules": ("document", _rules),
    "reports": ("reports", _reports),
    "status": ("status", lambda v: "all" if v is None else v.value if hasattr(v, "value") else str(v)),
    "resolution": ("resolution", _resolution),
    "approver": ("approver", _approver),
    "observed_at": ("observed_at", lambda v: v.isoformat() if isinstance(v, datetime) else v),
}


def _seg(value: str) -> str:
    from urllib.parse import quote

    if not value:
        raise E.NotFound("an empty id names nothing")
    return quote(str(value), safe="")


def _results(body: list[dict[str, Any]]) -> list[Execution | E.ClearanceError]:
    return [Execution.model_validate(r["execution"]) if r["ok"] else _error({"error": r["error"]}, r["error"]["status"])
            for r in body]  # fmt: skip


def _ruleset(body: dict[str, Any]) -> RuleSet:
    if body["policy_version"] == "0" and not body["rules"]:
        return RuleSet.empty()
    source = RuleFile.model_validate({"version": body.get("version", 1), "rules": body["rules"]})
    return RuleSet.compile(source, body["policy_version"], body.get("rule_versions") or {})


def _versions(body: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "applied_at": datetime.fromisoformat(r["applied_at"])} for r in body]


#: Answers that are not their return type's JSON form.
_DECODE: dict[str, Callable[[Any], Any]] = {"record_executions": _results, "current_rules": _ruleset,
                                            "policy_versions": _versions}  # fmt: skip


def _decoder(name: str) -> Callable[[Any], Any]:
    """How an operation's answer becomes its return type: from the protocol's annotation."""
    if name in _DECODE:
        return _DECODE[name]
    answer = returns(name)
    if answer is type(None):
        return lambda body: None
    return TypeAdapter(answer).validate_python


class _Request:
    """One operation's HTTP request, built from its arguments once (the same on every retry)."""

    __slots__ = ("method", "path", "json", "params", "timeout", "headers", "empty")

    def __init__(self, op: Operation, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        bound = signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        values = dict(list(bound.arguments.items())[1:])  # without self
        path = op.path
        for name in op.path_params:
            path = path.replace("{" + name + "}", _seg(values.pop(name)))
        wire: dict[str, Any] = {}
        for name, value in values.items():
            if name in op.server_sets:
                continue  # the server takes it from the key's identity
            wire_name, encode = _ENCODE.get(name, (name, to_jsonable_python))
            wire[wire_name] = encode(value)
        self.method, self.path = op.method, path
        self.params = {k: v for k, v in wire.items() if v is not None} if op.method == "GET" else None
        self.json = None if op.method == "GET" else (wire[op.body] if op.body else wire)
        self.timeout = float(values[op.wait]) + 30.0 if op.wait else None
        # Taken in the caller's context (the async client's too), so the server's decision span
        # is a child of whatever span the agent has open around this call.
        self.headers = trace_headers()
        if op.method != "GET":
            self.headers["Idempotency-Key"] = uuid.uuid4().hex
        #: An empty batch of execution reports: nothing to send.
        self.empty = op.name == "record_executions" and not self.json["reports"]

    def send(self, timeout: httpx.Timeout) -> dict[str, Any]:
        """The arguments of ``client.request``."""
        return {"method": self.method, "url": self.path, "json": self.json, "params": self.params, "headers": self.headers,
                "timeout": timeout}  # fmt: skip


class _Remote:
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
        self._backoff = wait_random_exponential(multiplier=backoff_seconds, max=max_backoff_seconds)
        limits = httpx.Limits(max_keepalive_connections=32, max_connections=64)
        self._client_kw = {"base_url": self.url, "headers": self._headers, "timeout": self._timeout,
                           "transport": transport, "limits": limits}  # fmt: skip

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        after = retry_after_seconds(exc.response.headers) if isinstance(exc, _Busy) else None
        return min(after, self.max_backoff_seconds) if after is not None else float(self._backoff(state))

    def _policy(self) -> dict[str, Any]:
        return {"stop": stop_after_attempt(self.retries + 1), "wait": self._wait, "reraise": True,
                "retry": retry_if_exception(lambda e: isinstance(e, (httpx.TransportError, _Busy)))}  # fmt: skip

    def _timeout_for(self, request: _Request) -> httpx.Timeout:
        return self._timeout if request.timeout is None else httpx.Timeout(request.timeout, connect=self._timeout.connect)

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code in _RETRY_STATUS:
            raise _Busy(response)
        try:
            body = response.json()
        except ValueError:
            raise RemoteError(f"the server answered {response.status_code} without JSON", status=response.status_code,
                              type="bad_response") from None  # fmt: skip
        if response.status_code >= 400:
            raise _error(body, response.status_code)
        return body

    def _unavailable(self, exc: Exception) -> EngineUnavailable:
        status = exc.response.status_code if isinstance(exc, _Busy) else 0
        return EngineUnavailable(f"clearance server at {self.url} unavailable after {self.retries + 1} attempts: {exc}",
                                 status=status, type="unavailable")  # fmt: skip


def _blocking(name: str, signature: inspect.Signature) -> Callable[..., Any]:
    op, decode = OPERATIONS[name], _decoder(name)

    def call(self: RemoteEngine, *args: Any, **kwargs: Any) -> Any:
        request = _Request(op, signature, args, kwargs)
        if request.empty:
            return []
        try:
            for attempt in Retrying(**self._policy()):
                with attempt:
                    body = self._answer(self._client.request(**request.send(self._timeout_for(request))))
        except (httpx.TransportError, _Busy) as exc:
            raise self._unavailable(exc) from exc
        return decode(body[op.answer] if op.answer else body)

    return call


def _awaiting(name: str, signature: inspect.Signature) -> Callable[..., Any]:
    op, decode = OPERATIONS[name], _decoder(name)

    async def call(self: AsyncRemoteEngine, *args: Any, **kwargs: Any) -> Any:
        request = _Request(op, signature, args, kwargs)
        if request.empty:
            return []
        try:
            async for attempt in AsyncRetrying(**self._policy()):
                with attempt:
                    body = self._answer(await self._client.request(**request.send(self._timeout_for(request))))
        except (httpx.TransportError, _Busy) as exc:
            raise self._unavailable(exc) from exc
        return decode(body[op.answer] if op.answer else body)

    return call


class RemoteEngine(_Remote, EngineAPI):
    """A blocking engine client. Thread-safe: share one between threads."""

    def __init__(self, url: str, api_key: str, **kw: Any) -> None:
        super().__init__(url, api_key, **kw)
        self._client = httpx.Client(**self._client_kw)

    def aio(self) -> AsyncRemoteEngine:
        """The asyncio twin, on the same server with the same key and options."""
        return AsyncRemoteEngine(self.url, self._api_key, **self._options)  # type: ignore[arg-type]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRemoteEngine(_Remote, AsyncEngineAPI):
    """The asyncio engine client: the same operations as coroutines (like :class:`AsyncEngine`)."""

    def __init__(self, url: str, api_key: str, **kw: Any) -> None:
        super().__init__(url, api_key, **kw)
        self._client = httpx.AsyncClient(**self._client_kw)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncRemoteEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


derive(RemoteEngine, _blocking, is_async=False)
derive(AsyncRemoteEngine, _awaiting, is_async=True)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}
