"""Turn types: what the scripted server answers to one ``POST .../responses`` or
``POST .../chat/completions``.

A script is a sequence of turns. Each request to ``/responses`` or ``/chat/completions``
plays (pops) the next one; a model turn is rendered for the API that was called (see
:mod:`clearance.testing.chat` for the Chat Completions rendering). A turn is one of:

- :class:`ModelTurn` — a model reply: ``200`` with a full ``Response`` object whose
  ``output`` holds the turn's items (message, function_call, reasoning, ...). To a
  request with ``"stream": true`` the same reply is streamed as server-sent events
  (``response.created`` ... ``response.completed``); :class:`StreamOptions` (set with
  :meth:`ModelTurn.streamed`, :meth:`ModelTurn.cut_after`, :meth:`ModelTurn.error_after`)
  pace the events or break the stream on purpose.
- :class:`ErrorTurn` — an HTTP fault with OpenAI's error envelope
  ``{"error": {"message", "type", "param", "code"}}`` and optional ``Retry-After``.
- :class:`RawTurn` — a verbatim HTTP reply (any status, body and headers), for
  malformed or unusual responses.
- a callable ``(request_json) -> Turn``, resolved when the request arrives, so a script
  can react to what the agent sent.

Build turns with the factories in :mod:`clearance.testing.turn` rather than by hand.
Turns are immutable; output items are templates whose ``id``/``call_id`` are filled with
fresh ids each time the turn is rendered, unless given explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

__all__ = ["ErrorTurn", "ModelTurn", "RawTurn", "ScriptItem", "StreamError", "StreamOptions", "Turn"]

_T = TypeVar("_T", bound="Turn")


@dataclass(frozen=True, kw_only=True)
class Turn:
    """Base of every turn. ``delay_seconds`` is slept before the reply is sent."""

    delay_seconds: float = 0.0

    def delayed(self: _T, seconds: float) -> _T:
        """A copy of this turn that waits ``seconds`` before replying (latency, timeouts)."""
        if seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        return dataclasses.replace(self, delay_seconds=float(seconds))


#: How an ``error`` stream event is shaped (see :class:`StreamError`).
ErrorShape = Literal["both", "spec", "production"]
#: How a cut-off stream ends: ``"abort"`` drops the connection inside the chunked body;
#: ``"eof"`` ends the HTTP body cleanly, just without a terminal event.
CutMode = Literal["abort", "eof"]


@dataclass(frozen=True, kw_only=True)
class StreamError:
    """An ``error`` event sent in place of the rest of a stream (which then ends).

    ``shape`` picks the payload, because OpenAI's documentation and its servers disagree:

    - ``"spec"``: ``{"type": "error", "code", "message", "param", "sequence_number"}`` as the
      spec's ``ResponseErrorEvent`` documents. The openai SDK (2.x and 3.x) does NOT raise on
      it: iteration yields a ``ResponseErrorEvent`` and then ends.
    - ``"production"``: ``{"type": "error", "sequence_number", "error": {"type", "code",
      "message", "param"}}``, the nested shape the live API is reported to send (e.g.
      openai/openai-dotnet#881). The SDK raises ``openai.APIError`` while iterating. Not
      valid against the spec's ``ResponseErrorEvent`` (no top-level ``message``).
    - ``"both"`` (default): the spec's top-level fields *and* the nested ``error`` object, so
      it validates against the spec and the SDK raises ``openai.APIError`` as with the live API.
    """

    message: str = "An error occurred while processing your request."
    code: str | None = "server_error"
    param: str | None = None
    type: str = "server_error"
    shape: ErrorShape = "both"

    def event(self, sequence_number: int) -> dict[str, Any]:
        nested = {"type": self.type, "code": self.code, "message": self.message, "param": self.param}
        event: dict[str, Any] = {"type": "error"}
        if self.shape in ("spec", "both"):
            event.update(code=self.code, message=self.message, param=self.param)
        event["sequence_number"] = sequence_number
        if self.shape in ("production", "both"):
            event["error"] = nested
        return event


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """How a :class:`ModelTurn` is streamed (ignored for non-streaming requests, except faults).

    ``event_delay``: seconds slept between consecutive events (the turn's ``delay_seconds``
    is slept before the first byte). ``cut_after``: write only the first ``N`` events (never
    the terminal one), then end the stream as ``cut_mode`` says, without a terminal event.
    ``error_after``/``error``: after ``N`` events send ``error`` (a :class:`StreamError`)
    and end the stream. ``N`` is capped at the number of events before the terminal one.
    ``interleave_tool_calls`` (Chat Completions only): parallel tool calls' fragments alternate
    instead of following one another.

    For a Chat Completions stream an "event" is a ``chat.completion.chunk``; the terminal part
    is the finish chunk(s), the usage chunk and ``data: [DONE]``, so a cut or errored chat
    stream delivers at most the chunks before the first finish chunk. The ``error`` of a chat
    stream is always sent as ``data: {"error": {"message", "type", "param", "code"}}`` (the
    shape OpenAI sends mid-stream; ``shape`` does not apply).
    """

    event_delay: float = 0.0
    cut_after: int | None = None
    cut_mode: CutMode = "abort"
    error_after: int | None = None
    error: StreamError | None = None
    interleave_tool_calls: bool = False

    @property
    def faulty(self) -> bool:
        """Whether the stream is broken on purpose (cut off or ended by an ``error`` event)."""
        return self.cut_after is not None or self.error is not None

    def merged(self, other: StreamOptions) -> StreamOptions:
        """``other``'s settings where it has any, else these (used by ``ModelTurn.__add__``)."""
        default = StreamOptions()
        values = {
            f.name: getattr(other, f.name) if getattr(other, f.name) != getattr(default, f.name) else getattr(self, f.name)
            for f in dataclasses.fields(StreamOptions)
        }
        return StreamOptions(**values)


@dataclass(frozen=True, kw_only=True)
class ModelTurn(Turn):
    """A successful model reply: ``output`` item templates plus response-level tweaks.

    ``usage`` entries override the token counts the server estimates (keys of
    ``ResponseUsage``; nested ``input_tokens_details``/``output_tokens_details`` are
    merged). ``fields`` are merged last into the top level of the ``Response`` object
    (e.g. ``status``, ``incomplete_details``, ``error``), so they win over everything.
    ``stream`` says how the reply is streamed when the request has ``"stream": true``.
    ``chat_fields`` are merged last into the top level of the ``chat.completion`` object when
    the turn answers ``POST .../chat/completions`` (see :mod:`clearance.testing.chat`).
    """

    items: tuple[Mapping[str, Any], ...] = ()
    usage: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    stream: StreamOptions = field(default_factory=StreamOptions)
    chat_fields: Mapping[str, Any] = field(default_factory=dict)

    def __add__(self, other: ModelTurn) -> ModelTurn:
        """Concatenate two model turns into one reply (e.g. a message then a call)."""
        if not isinstance(other, ModelTurn):
            return NotImplemented
        usage = {**self.usage, **other.usage}
        return ModelTurn(
            items=self.items + other.items,
            usage=usage,
            fields={**self.fields, **other.fields},
            stream=self.stream.merged(other.stream),
            chat_fields={**self.chat_fields, **other.chat_fields},
            delay_seconds=self.delay_seconds + other.delay_seconds,
        )

    # -- streaming ----------------------------------------------------------------------

    def streamed(self, *, event_delay: float = 0.0, interleave_tool_calls: bool | None = None) -> ModelTurn:
        """A copy whose stream sleeps ``event_delay`` seconds between events (time-to-first-token,
        throughput and timeout tests; ``delayed()`` sets the wait before the first byte).

        ``interleave_tool_calls=True`` (Chat Completions streams): the fragments of parallel
        tool calls alternate (all first fragments, then argument pieces round-robin) instead of
        one call after the other; ``None`` keeps the current setting.
        """
        if event_delay < 0:
            raise ValueError("event_delay must be >= 0")
        stream = dataclasses.replace(self.stream, event_delay=float(event_delay))
        if interleave_tool_calls is not None:
            stream = dataclasses.replace(stream, interleave_tool_calls=bool(interleave_tool_calls))
        return dataclasses.replace(self, stream=stream)

    def cut_after(self, events: int, *, mode: CutMode = "abort") -> ModelTurn:
        """A copy whose stream stops after ``events`` events, without a terminal event.

        ``mode="abort"`` (default) closes the connection in the middle of the chunked body,
        like a dropped network connection; ``mode="eof"`` ends the body cleanly, like a
        proxy that closes the stream early. Only for streaming requests: played to a
        request without ``stream: true`` the turn is a script problem (500, not retried).
        """
        if events < 0:
            raise ValueError("cut_after needs events >= 0")
        if mode not in ("abort", "eof"):
            raise ValueError(f"mode must be 'abort' or 'eof', not {mode!r}")
        return dataclasses.replace(
            self, stream=dataclasses.replace(self.stream, cut_after=int(events), cut_mode=mode)
        )

    def error_after(
        self,
        events: int,
        message: str = StreamError.message,
        *,
        code: str | None = StreamError.code,
        param: str | None = None,
        type: str = StreamError.type,
        shape: ErrorShape = "both",
    ) -> ModelTurn:
        """A copy whose stream sends an ``error`` event after ``events`` events, then ends.

        See :class:`StreamError` for ``shape`` (the default ``"both"`` validates against the
        spec and makes the SDK raise ``openai.APIError``). Only for streaming requests.
        """
        if events < 0:
            raise ValueError("error_after needs events >= 0")
        if shape not in ("both", "spec", "production"):
            raise ValueError(f"shape must be 'both', 'spec' or 'production', not {shape!r}")
        error = StreamError(message=message, code=code, param=param, type=type, shape=shape)
        return dataclasses.replace(self, stream=dataclasses.replace(self.stream, error_after=int(events), error=error))

    def with_usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        total_tokens: int | None = None,
    ) -> ModelTurn:
        """A copy with fixed token counts (unset ones stay estimated; total is recomputed)."""
        usage: dict[str, Any] = dict(self.usage)
        for key, value in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("total_tokens", total_tokens),
        ):
            if value is not None:
                usage[key] = value
        details_in = dict(usage.get("input_tokens_details") or {})
        if cached_tokens is not None:
            details_in["cached_tokens"] = cached_tokens
        if cache_write_tokens is not None:
            details_in["cache_write_tokens"] = cache_write_tokens
        if details_in:
            usage["input_tokens_details"] = details_in
        if reasoning_tokens is not None:
            usage["output_tokens_details"] = {
                **(usage.get("output_tokens_details") or {}),
                "reasoning_tokens": reasoning_tokens,
            }
        return dataclasses.replace(self, usage=usage)

    def with_fields(self, **fields: Any) -> ModelTurn:
        """A copy whose ``Response`` object gets these top-level fields (override anything)."""
        return dataclasses.replace(self, fields={**self.fields, **fields})

    def with_chat_fields(self, **fields: Any) -> ModelTurn:
        """A copy whose ``chat.completion`` object gets these top-level fields (override anything;
        streamed chat chunks are derived from the result)."""
        return dataclasses.replace(self, chat_fields={**self.chat_fields, **fields})


@dataclass(frozen=True, kw_only=True)
class ErrorTurn(Turn):
    """An HTTP error reply with OpenAI's envelope.

    ``retry_after`` / ``retry_after_ms`` set the ``Retry-After`` / ``retry-after-ms``
    headers (the SDK sleeps that long before retrying, up to its own cap); ``should_retry`` sets
    ``x-should-retry`` (overrides the SDK's status-based retry rule); ``headers`` adds any
    other header.
    """

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True, kw_only=True)
class RawTurn(Turn):
    """A verbatim HTTP reply: ``body`` (dict/list are JSON-encoded, str/bytes sent as is)."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def body_bytes(self) -> bytes:
        import json

        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


#: What a script holds: a turn, or a callable that builds one from the request JSON.
ScriptItem = Union[Turn, Callable[[dict[str, Any]], Turn]]
