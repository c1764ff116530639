"""Responses API stream events, mapped to the adapter's event dicts.

:class:`StreamAssembler` is fed the raw events of one streamed model turn, in order, and says
what to hand the user for each; when the stream ends it gives the loop the final response. A
stream that ends without a terminal response (cut off, an ``error`` event) or with
``response.failed`` becomes a *failed* response with no output, so no tool ever runs on
partial arguments.
The sync and async streaming drivers only iterate and forward.
"""

from __future__ import annotations

from typing import Any

import openai

__all__ = ["StreamAssembler", "event_dict"]


#: Raw event type -> (adapter type, the fields copied onto the adapter event).
_MAPPED: dict[str, tuple[str, tuple[str, ...]]] = {
    "response.output_text.delta": ("llm_delta", ("delta", "item_id", "output_index", "content_index")),
    "response.output_text.done": ("llm_text_done", ("text", "item_id", "output_index", "content_index")),
    "response.output_item.added": ("output_item_added", ("item", "output_index")),
    "response.function_call_arguments.delta": ("function_call_args_delta", ("delta", "item_id", "output_index")),
    "response.function_call_arguments.done": ("function_call_args_done", ("arguments", "item_id", "output_index", "name")),
    "response.refusal.delta": ("refusal_delta", ("delta", "item_id", "output_index", "content_index")),
}


def event_dict(event: Any) -> dict[str, Any]:
    """An SDK event object (either major version) or a dict, as a plain dict."""
    if isinstance(event, dict):
        return event
    return event.model_dump(mode="json", warnings=False)  # type: ignore[no-any-return]


class _Assembler:
    """What both wires' assemblers share: failures, and what the loop gets at the end."""

    def __init__(self) -> None:
        self.final: dict[str, Any] | None = None
        self.failure: dict[str, Any] | None = None

    def feed(self, raw: Any) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, exc: BaseException) -> dict[str, Any]:
        """The stream broke: the connection dropped, or the SDK raised on an ``error`` event."""
        if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIConnectionError):
            # openai raises APIError for an ``error`` event that carries the live API's nested
            # ``error`` object; it is the same failure as a plain ``error`` event.
            body = exc.body if isinstance(exc.body, dict) else None
            return self._fail("error", {"code": exc.code, "message": exc.message}, body)
        return self._fail("stream_error", {"message": f"{type(exc).__name__}: {exc}"}, None)

    def _fail(self, reason: str, error: Any, ev: dict[str, Any] | None) -> dict[str, Any]:
        self.failure = {"type": "response_failed", "reason": reason, "error": error, "raw": ev}
        return self.failure

    def _completed(self) -> list[dict[str, Any]]:
        """Events to yield once a stream ends well (the chat wire's ``response_done``)."""
        return []

    def finish(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the response for the loop, the last events to yield).

        Only a terminal response (completed, or incomplete) is handed on as such; anything else
        is a failed response with no output, so nothing partial reaches the transcript or a tool.
        """
        if self.failure is None and self.final is None:
            return self._failed(), [self._fail("cut_off", {"message": "the stream ended before the response was complete"}, None)]
        if self.failure is not None or self.final is None:
            return self._failed(), []
        return self.final, self._completed()

    def _failed(self) -> dict[str, Any]:
        base = self.final or {}
        return {"id": base.get("id"), "status": "failed", "output": [], "error": self.failure["error"] if self.failure else None}


class StreamAssembler(_Assembler):
    """Responses API stream events (``response.*``)."""

    def feed(self, raw: Any) -> list[dict[str, Any]]:
        """The adapter events for one raw event (none for events users don't need)."""
        ev = event_dict(raw)
        kind = ev.get("type", "")
        if kind in _MAPPED:
            name, fields = _MAPPED[kind]
            return [{"type": name, **{f: ev[f] for f in fields if f in ev}, "raw": ev}]
        if kind == "response.completed":
            self.final = ev.get("response") or {}
            return [{"type": "response_done", "response": self.final, "raw": ev}]
        if kind == "response.failed":
            self.final = {**(ev.get("response") or {}), "status": "failed"}
            return [self._fail(kind, self.final.get("error"), ev)]
        if kind == "response.incomplete":
            # Terminal but cut short: the loop sees it as ``run`` would (status "incomplete",
            # its text kept, none of its calls run); the stream reports it as a failure.
            self.final = {**(ev.get("response") or {}), "status": "incomplete"}
            return [{"type": "response_failed", "reason": kind, "error": self.final.get("incomplete_details"),
                     "response": self.final, "raw": ev}]  # fmt: skip
        if kind == "error":
            return [self._fail("error", {"code": ev.get("code"), "message": ev.get("message")}, ev)]
        return []
