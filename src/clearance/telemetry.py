"""OpenTelemetry spans for decisions and governed tool calls, when OpenTelemetry is there.

Two spans, so a trace shows where an agent's time went and what policy said:

- ``clearance.evaluate`` around each decision (the guard's, and the server's for
  ``POST /v1/decisions``, see :func:`evaluate_span`): ``clearance.tool``, ``clearance.actor``,
  ``clearance.domain``, then ``clearance.result``, ``clearance.matched_rules``,
  ``clearance.risk_score``, ``clearance.request_id``, ``clearance.policy_version``; status
  ERROR if the engine raised.
- ``clearance.tool_call`` around each governed tool the agent loop runs, a child of whatever
  span is current (so it nests under the caller's own spans, and the tool's spans nest under
  it): ``clearance.tool``, ``clearance.request_id``, ``clearance.execution_status``
  (``executed``/``failed``), the exception recorded and status ERROR when the tool raised.

OpenTelemetry is optional (``pip install 'clearance[otel]'``) and imported lazily. Without it, or
before an application installs a tracer provider, every helper returns one shared do-nothing
object: the cost is a function call and a check, nothing is allocated and no attribute is built.
Spans go to the global tracer provider (``opentelemetry.trace.set_tracer_provider``), or to the
one given to :func:`use_tracer_provider`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from clearance._version import __version__

__all__ = ["EVALUATE", "NO_SPAN", "TOOL_CALL", "evaluate_span", "tool_call_span", "trace_headers", "use_tracer_provider"]

EVALUATE = "clearance.evaluate"
TOOL_CALL = "clearance.tool_call"

_MISSING: Any = object()
#: ``opentelemetry.trace`` once imported; None when it is not installed; _MISSING before we looked.
_trace: Any = _MISSING
#: The tracer spans come from, once a real provider is known (the global proxy is not one).
_tracer: Any = None
#: A provider given to ``use_tracer_provider``, which wins over the global one.
_provider: Any = None


def _load() -> Any:
    global _trace
    try:
        from opentelemetry import trace
    except ImportError:
        trace = None
    _trace = trace
    return trace


#: When ``OTEL_PYTHON_TRACER_PROVIDER`` was last looked up in the environment, and whether it was set.
_env_checked_at = -1.0
_env_names_provider = False
#: How long the answer for the environment variable is kept (a look-up in ``os.environ`` costs
#: more than the rest of this check, and it ran on every decision).
ENV_RECHECK_SECONDS = 1.0


def _no_global_provider(trace: Any) -> bool:
    """Whether no global tracer provider is installed, nor named by ``OTEL_PYTHON_TRACER_PROVIDER``
    (which ``trace.get_tracer_provider`` would load). ``set_tracer_provider`` is seen at once; the
    environment variable within :data:`ENV_RECHECK_SECONDS`."""
    global _env_checked_at, _env_names_provider
    if getattr(trace, "_TRACER_PROVIDER", _MISSING) is not None:
        return False  # installed (or an OpenTelemetry without that global: ask it every time)
    now = time.monotonic()
    if now - _env_checked_at >= ENV_RECHECK_SECONDS:
        _env_names_provider = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
        _env_checked_at = now
    return not _env_names_provider


def _active_tracer() -> Any:
    """The tracer to use, or None when spans would go nowhere (no OpenTelemetry, no provider)."""
    global _tracer
    if _tracer is not None:
        return _tracer
    trace = _trace if _trace is not _MISSING else _load()
    if trace is None:
        return None
    if _provider is None and _no_global_provider(trace):
        return None  # the common case when nobody traces: no call into OpenTelemetry, no os.environ
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None  # nobody installed a provider (yet): keep checking, cheaply
    # A global provider is set once and for all, so the tracer can be kept from now on.
    _tracer = provider.get_tracer("clearance", __version__)
    return _tracer


def use_tracer_provider(provider: Any) -> None:
    """Send clearance's spans to ``provider`` instead of the global one (None: back to the global)."""
    global _provider, _tracer
    _provider, _tracer = provider, None


class _NoSpan:
    """What every helper returns when tracing is off: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def decision(self, decision: Any) -> None:
        pass

    def tool_result(self, status: str, error: BaseException | None = None) -> None:
        pass


NO_SPAN = _NoSpan()


class _Span:
    """A live span, made current on ``with``; exceptions leaving the block are recorded as errors."""

    __slots__ = ("_cm", "_kw", "_name", "_tracer", "span")

    def __init__(self, tracer: Any, name: str, **kw: Any) -> None:
        self._tracer, self._name, self._kw = tracer, name, kw
        self._cm: Any = None
        self.span: Any = None

    def __enter__(self) -> _Span:
        self._cm = self._tracer.start_as_current_span(self._name, record_exception=True, set_status_on_exception=True,
                                                      **self._kw)  # fmt: skip
        self.span = self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)

    def decision(self, decision: Any) -> None:
        """What the engine decided, as attributes of the ``clearance.evaluate`` span."""
        span = self.span
        if span is None or not span.is_recording():
            return
        span.set_attributes({
            "clearance.result": decision.result.value,
            "clearance.matched_rules": [m.rule_id for m in decision.matched_rules],
            "clearance.risk_score": float(decision.risk_score),
            "clearance.request_id": decision.request_id,
        })  # fmt: skip
        if decision.policy_version is not None:
            span.set_attribute("clearance.policy_version", str(decision.policy_version))

    def tool_result(self, status: str, error: BaseException | None = None) -> None:
        """How the tool call ended; a raised exception is recorded and marks the span ERROR."""
        span = self.span
        if span is None:
            return
        span.set_attribute("clearance.execution_status", status)
        if error is not None:
            trace = _trace
            span.record_exception(error)
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def evaluate_span(action: Any, *, server: bool = False, headers: Mapping[str, str] | None = None) -> Any:
    """``with evaluate_span(action) as span: decision = engine.evaluate(action); span.decision(decision)``.

    ``server=True`` is the HTTP API's side of a decision. Its span is the request's SERVER span,
    in the caller's trace when ``headers`` carry a W3C ``traceparent``; but when the HTTP layer
    already traces the request (FastAPI does once a tracer provider is installed, as do the
    ASGI instrumentations) that span is current and is the SERVER one, so ours is its INTERNAL
    child: one SERVER span per request, as OpenTelemetry's conventions want.
    """
    tracer = _active_tracer()
    if tracer is None:
        return NO_SPAN
    attributes = {"clearance.tool": action.tool, "clearance.actor": action.actor, "clearance.domain": action.domain}
    trace = _trace
    if not server or trace.get_current_span().get_span_context().is_valid:
        return _Span(tracer, EVALUATE, attributes=attributes)
    context = None
    if headers is not None and "traceparent" in headers:
        from opentelemetry.propagate import extract

        context = extract(headers)
    return _Span(tracer, EVALUATE, kind=trace.SpanKind.SERVER, attributes=attributes, context=context)


def trace_headers() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``, ``tracestate``) as request headers,
    so that a clearance server's decision span joins the caller's trace (RemoteEngine sends
    them). Empty when no span is current, or OpenTelemetry is not installed; it is the
    application's propagator that writes them, so a custom one is honoured."""
    trace = _trace if _trace is not _MISSING else _load()
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def tool_call_span(tool: str, *, request_id: str | None = None, call_id: str | None = None) -> Any:
    """``with tool_call_span(name, request_id=...) as span: ...; span.tool_result("executed")``."""
    tracer = _active_tracer()
    if tracer is None:
        return NO_SPAN
    attributes = {"clearance.tool": tool, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
    if request_id is not None:
        attributes["clearance.request_id"] = request_id
    if call_id is not None:
        attributes["gen_ai.tool.call.id"] = call_id
    return _Span(tracer, TOOL_CALL, attributes=attributes)
