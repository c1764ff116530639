"""Factories for scripted model turns (``from clearance.testing import turn``).

    turn.function_call("refund_payment", {"order_id": "ord_1", "amount": 10})
    turn.function_calls([("a", {"x": 1}), ("b", {"y": 2})])   # parallel calls, one turn
    turn.text("Refunded.")
    turn.refusal("I can't help with that.")
    turn.reasoning("thinking...", then=turn.function_call("a", {}))
    turn.text("Let me look.") + turn.function_call("lookup", {"q": "x"})
    turn.raw_function_call("a", '{"x": ')                     # malformed JSON arguments
    turn.error(500); turn.error(429, retry_after=1); turn.error(400, message="bad input")
    turn.raw({"not": "a response"}, status=200)               # anything on the wire

Every factory takes ``delay_seconds=`` (the server sleeps before replying); every
model turn has ``.with_usage(...)``, ``.with_fields(...)`` and ``.delayed(...)``.

Streaming (requests with ``"stream": true``; any model turn streams, these shape it)::

    turn.text("Hello there").streamed(event_delay=0.01)       # pause between events
    turn.text("Hello there").delayed(0.2)                     # pause before the first byte
    turn.stream_cut(after=4, then=turn.text("Hello there"))   # connection dropped after 4 events
    turn.text("Hello there").cut_after(4, mode="eof")         # body ends cleanly, no terminal event
    turn.stream_error("Overloaded", after=3, then=turn.text("Hi"))  # `error` event, then the end
    turn.failed("boom")         # streamed: ... response.failed (the non-stream reply: status failed)
    turn.incomplete(then=turn.text("Hel"))                    # streamed: ... response.incomplete
    turn.error(429, retry_after=1)                            # HTTP 429 before any event

The same turns answer ``POST .../chat/completions`` (see :mod:`clearance.testing.chat`):
``text`` -> ``message.content``, ``refusal`` -> ``message.refusal``, ``function_call(s)`` ->
``message.tool_calls`` (``finish_reason: "tool_calls"``), ``reasoning`` -> nothing (only
``reasoning_tokens`` in usage), ``incomplete`` -> ``finish_reason: "length"``, ``failed`` ->
HTTP 500 with the error envelope; ``.streamed(interleave_tool_calls=True)`` interleaves
parallel tool-call fragments; ``.with_chat_fields(...)`` overrides top-level completion fields.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from clearance.testing.script import ErrorTurn, ModelTurn, RawTurn

__all__ = [
    "error",
    "stream_cut",
    "stream_error",
    "failed",
    "function_call",
    "function_calls",
    "incomplete",
    "items",
    "raw",
    "raw_function_call",
    "reasoning",
    "refusal",
    "text",
]

_AUTO: Any = object()


def _arguments_text(arguments: Mapping[str, Any] | str) -> str:
    if isinstance(arguments, str):
        return arguments
    if not isinstance(arguments, Mapping):
        raise TypeError(f"function call arguments must be a mapping or a str, not {type(arguments).__name__}")
    return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def _function_call_item(
    name: str,
    arguments: Mapping[str, Any] | str,
    *,
    call_id: str | None = None,
    id: str | None = None,
    namespace: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "function_call", "name": name, "arguments": _arguments_text(arguments)}
    if id is not None:
        item["id"] = id
    if call_id is not None:
        item["call_id"] = call_id
    if namespace is not None:
        item["namespace"] = namespace
    item["status"] = status
    return item


def function_call(
    name: str,
    arguments: Mapping[str, Any] | str | None = None,
    *,
    call_id: str | None = None,
    id: str | None = None,
    namespace: str | None = None,
    status: str = "completed",
    delay_seconds: float = 0.0,
) -> ModelTurn:
    """One turn whose output is a single ``function_call`` item.

    ``arguments`` is JSON-encoded (compactly, like OpenAI); a ``str`` is sent verbatim
    as the ``arguments`` text (see :func:`raw_function_call`). ``call_id`` (``call_...``)
    and ``id`` (``fc_...``) are generated per reply unless given.
    """
    item = _function_call_item(
        name, {} if arguments is None else arguments, call_id=call_id, id=id, namespace=namespace, status=status
    )
    return ModelTurn(items=(item,), delay_seconds=delay_seconds)


def raw_function_call(
    name: str,
    arguments_text: str,
    *,
    call_id: str | None = None,
    id: str | None = None,
    delay_seconds: float = 0.0,
) -> ModelTurn:
    """A ``function_call`` whose ``arguments`` string is sent exactly as given (may be invalid JSON)."""
    if not isinstance(arguments_text, str):
        raise TypeError("arguments_text must be a str")
    return function_call(name, arguments_text, call_id=call_id, id=id, delay_seconds=delay_seconds)


def function_calls(
    calls: Iterable[tuple[str, Mapping[str, Any] | str] | tuple[str, Mapping[str, Any] | str, str]],
    *,
    delay_seconds: float = 0.0,
) -> ModelTurn:
    """One turn with several ``function_call`` items (parallel tool calls).

    Each entry is ``(name, arguments)`` or ``(name, arguments, call_id)``; string
    arguments are sent verbatim.
    """
    out = []
    for entry in calls:
        if len(entry) == 2:
            name, arguments = entry  # type: ignore[misc]
            call_id = None
        elif len(entry) == 3:
            name, arguments, call_id = entry  # type: ignore[misc]
        else:
            raise ValueError(f"expected (name, arguments) or (name, arguments, call_id), got {entry!r}")
        out.append(_function_call_item(name, arguments, call_id=call_id))
    if not out:
        raise ValueError("function_calls needs at least one call")
    return ModelTurn(items=tuple(out), delay_seconds=delay_seconds)


def _message(content: list[dict[str, Any]], *, id: str | None, phase: str | None, status: str) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message"}
    if id is not None:
        item["id"] = id
    item.update({"role": "assistant", "status": status, "content": content})
    if phase is not None:
        item["phase"] = phase
    return item


def text(
    text: str,
    *,
    annotations: Sequence[Mapping[str, Any]] = (),
    id: str | None = None,
    phase: str | None = None,
    status: str = "completed",
    delay_seconds: float = 0.0,
) -> ModelTurn:
    """A final assistant message with one ``output_text`` part (``resp.output_text``)."""
    part = {"type": "output_text", "text": text, "annotations": [dict(a) for a in annotations], "logprobs": []}
    return ModelTurn(items=(_message([part], id=id, phase=phase, status=status),), delay_seconds=delay_seconds)


def refusal(refusal: str, *, id: str | None = None, delay_seconds: float = 0.0) -> ModelTurn:
    """An assistant message whose content is a ``refusal`` part (no output_text)."""
    part = {"type": "refusal", "refusal": refusal}
    return ModelTurn(items=(_message([part], id=id, phase=None, status="completed"),), delay_seconds=delay_seconds)


def _encrypt(summary: Sequence[str], content: str | None) -> str:
    # Opaque, deterministic stand-in for OpenAI's encrypted reasoning blob.
    blob = json.dumps({"summary": list(summary), "content": content}, separators=(",", ":")).encode()
    return "gAAAAB" + base64.urlsafe_b64encode(blob).decode().rstrip("=")


def reasoning(
    summary: str | Sequence[str] | None = None,
    *,
    then: ModelTurn | None = None,
    content: str | None = None,
    encrypted_content: str | None = _AUTO,
    id: str | None = None,
    delay_seconds: float = 0.0,
) -> ModelTurn:
    """A ``reasoning`` item, followed by the items of ``then`` in the same reply.

    ``summary`` becomes ``summary_text`` parts; ``content`` (optional) a
    ``reasoning_text`` part. ``encrypted_content`` is an opaque generated string unless
    given (``None`` sends ``null``), so stateless loops can replay it.
    """
    if summary is None:
        summaries: list[str] = []
    elif isinstance(summary, str):
        summaries = [summary]
    else:
        summaries = list(summary)
    item: dict[str, Any] = {"type": "reasoning"}
    if id is not None:
        item["id"] = id
    item["summary"] = [{"type": "summary_text", "text": s} for s in summaries]
    if content is not None:
        item["content"] = [{"type": "reasoning_text", "text": content}]
    item["encrypted_content"] = _encrypt(summaries, content) if encrypted_content is _AUTO else encrypted_content
    turn = ModelTurn(items=(item,), delay_seconds=delay_seconds)
    return turn + then if then is not None else turn


def items(*output_items: Mapping[str, Any], delay_seconds: float = 0.0) -> ModelTurn:
    """A reply with arbitrary output items (dicts as on the wire; missing ids are filled)."""
    return ModelTurn(items=tuple(dict(i) for i in output_items), delay_seconds=delay_seconds)


def incomplete(
    reason: str = "max_output_tokens", *, then: ModelTurn | None = None, delay_seconds: float = 0.0
) -> ModelTurn:
    """A ``status: "incomplete"`` reply (``incomplete_details.reason``) with ``then``'s items."""
    base = then if then is not None else ModelTurn()
    return base.with_fields(status="incomplete", incomplete_details={"reason": reason}, completed_at=None).delayed(
        delay_seconds or base.delay_seconds
    )


def failed(
    message: str = "The model failed to generate a response.",
    *,
    code: str = "server_error",
    delay_seconds: float = 0.0,
) -> ModelTurn:
    """A ``200`` whose Response has ``status: "failed"`` and ``error: {code, message}``.

    (Synchronous failures usually arrive as HTTP errors — see :func:`error`; this shape
    is what background/streamed responses carry.)
    """
    return ModelTurn(
        fields={"status": "failed", "error": {"code": code, "message": message}, "completed_at": None},
        delay_seconds=delay_seconds,
    )


def stream_cut(after: int = 2, *, then: ModelTurn | None = None, mode: str = "abort") -> ModelTurn:
    """``then`` (default: an empty reply), streamed only up to ``after`` events, no terminal event.

    ``mode="abort"`` drops the connection inside the chunked body (the SDK sees a broken
    read); ``mode="eof"`` ends the body cleanly (the SDK's iteration just stops). Same as
    ``then.cut_after(after, mode=mode)``; streaming requests only.
    """
    base = then if then is not None else ModelTurn()
    return base.cut_after(after, mode=mode)  # type: ignore[arg-type]


def stream_error(
    message: str = "An error occurred while processing your request.",
    *,
    code: str | None = "server_error",
    param: str | None = None,
    type: str = "server_error",
    after: int = 2,
    then: ModelTurn | None = None,
    shape: str = "both",
) -> ModelTurn:
    """``then`` (default: an empty reply) streamed up to ``after`` events, then an ``error`` event.

    The stream ends after the ``error`` event (no terminal event). ``shape`` is ``"both"``
    (spec fields plus the nested ``error`` object the live API sends; the SDK raises
    ``openai.APIError``), ``"spec"`` (as documented; the SDK yields a ``ResponseErrorEvent``)
    or ``"production"`` (nested only); see :class:`~clearance.testing.script.StreamError`.
    Same as ``then.error_after(after, message, ...)``; streaming requests only.
    """
    base = then if then is not None else ModelTurn()
    return base.error_after(after, message, code=code, param=param, type=type, shape=shape)  # type: ignore[arg-type]


_DEFAULT_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "Invalid request.", None),
    401: ("invalid_request_error", "Incorrect API key provided.", "invalid_api_key"),
    403: ("invalid_request_error", "You are not allowed to perform this request.", None),
    404: ("invalid_request_error", "Not found.", None),
    409: ("invalid_request_error", "Conflict.", None),
    422: ("invalid_request_error", "Unprocessable entity.", None),
    429: ("requests", "Rate limit reached for requests. Please try again later.", "rate_limit_exceeded"),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!", None),
    502: ("server_error", "Bad gateway.", None),
    503: ("server_error", "The engine is currently overloaded, please try again later.", None),
}


def error(
    status: int = 500,
    message: str | None = None,
    *,
    type: str | None = None,
    param: str | None = None,
    code: str | None = _AUTO,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    should_retry: bool | None = None,
    headers: Mapping[str, str] | None = None,
    delay_seconds: float = 0.0,
) -> ErrorTurn:
    """An HTTP error with ``{"error": {"message", "type", "param", "code"}}``.

    ``message``/``type``/``code`` default to OpenAI-like values for the status (e.g.
    429 -> ``requests``/``rate_limit_exceeded``; 5xx -> ``server_error``; other 4xx ->
    ``invalid_request_error``). SDK mapping: 400 BadRequestError, 401
    AuthenticationError, 404 NotFoundError, 429 RateLimitError, >=500 InternalServerError
    (429, 408, 409 and >=500 are retried by default).
    """
    if not 400 <= status <= 599:
        raise ValueError(f"error status must be 4xx or 5xx, got {status}")
    if status in _DEFAULT_ERRORS:
        d_type, d_message, d_code = _DEFAULT_ERRORS[status]
    elif status >= 500:
        d_type, d_message, d_code = _DEFAULT_ERRORS[500]
    else:
        d_type, d_message, d_code = "invalid_request_error", f"Request failed with status {status}.", None
    return ErrorTurn(
        status=status,
        message=d_message if message is None else message,
        type=d_type if type is None else type,
        param=param,
        code=d_code if code is _AUTO else code,
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
        should_retry=should_retry,
        headers=dict(headers or {}),
        delay_seconds=delay_seconds,
    )


def raw(
    body: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
    delay_seconds: float = 0.0,
) -> RawTurn:
    """Any reply at all: ``body`` dict/list is JSON-encoded, str/bytes are sent as they are."""
    return RawTurn(
        status=status, body=body, headers=dict(headers or {}), content_type=content_type, delay_seconds=delay_seconds
    )
