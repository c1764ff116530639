"""Decompose a rendered ``Response`` into the Responses API's server-sent events.

:func:`response_events` turns the final ``Response`` dict (what the non-streaming path
returns) into the events OpenAI streams for it, in OpenAI's order, each with
``sequence_number`` counting from 0::

    response.created          (status in_progress, output [], no usage)
    response.in_progress
    per output item, in order (output_index 0, 1, ...):
      response.output_item.added   (status in_progress; empty content/arguments/summary)
      message:       per content part: response.content_part.added,
                       output_text: response.output_text.delta (one per word),
                                    response.output_text.annotation.added (per annotation),
                                    response.output_text.done
                       refusal:     response.refusal.delta (one per word), response.refusal.done
                     response.content_part.done
      function_call: response.function_call_arguments.delta (JSON split at word/punctuation
                     boundaries), response.function_call_arguments.done (with name)
      reasoning:     per content part: response.content_part.added,
                       response.reasoning_text.delta..., response.reasoning_text.done,
                       response.content_part.done;
                     per summary part: response.reasoning_summary_part.added,
                       response.reasoning_summary_text.delta..., ...text.done, ...part.done
      response.output_item.done    (the complete item)
    response.completed | response.failed | response.incomplete   (the full Response)

The terminal event follows the response's ``status``: ``incomplete`` -> ``response.incomplete``,
``failed``/``cancelled`` -> ``response.failed``, anything else -> ``response.completed``.
Every event validates against the spec's ``ResponseStreamEvent``. Output items of other
types get only ``output_item.added``/``.done``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["TERMINAL_EVENTS", "argument_chunks", "encode_event", "response_events", "text_chunks"]

#: Event types that end a successful stream (a stream may also end with an ``error`` event).
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})

_WORDS = re.compile(r"\s*\S+|\s+$")
_JSON_TOKENS = re.compile(r"\w+|\s+|[^\w\s]+")


def text_chunks(text: str) -> list[str]:
    """``text`` split into word deltas (leading whitespace kept with the word); joins back to ``text``."""
    return _WORDS.findall(text)


def argument_chunks(arguments: str) -> list[str]:
    """Function-call ``arguments`` split like model tokens (``{"``, ``order_id``, ``":"``, ...).

    Works on any string, valid JSON or not; joins back to ``arguments``.
    """
    return _JSON_TOKENS.findall(arguments)


def encode_event(event: dict[str, Any]) -> bytes:
    """One SSE frame: ``event: <type>\\ndata: <compact json>\\n\\n``."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def terminal_event_type(response: dict[str, Any]) -> str:
    status = response.get("status")
    if status == "incomplete":
        return "response.incomplete"
    if status in ("failed", "cancelled"):
        return "response.failed"
    return "response.completed"


def _in_progress_snapshot(response: dict[str, Any]) -> dict[str, Any]:
    snapshot = copy.deepcopy(response)
    snapshot.update(status="in_progress", output=[], completed_at=None, error=None, incomplete_details=None)
    # The spec's own example streams "usage": null, but its Response schema does not allow
    # null there; usage is optional, so the in-progress snapshots leave it out.
    snapshot.pop("usage", None)
    return snapshot


def response_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """Every event of a stream that delivers ``response``, terminal event last."""
    events: list[dict[str, Any]] = []

    def emit(type: str, **fields: Any) -> None:  # noqa: A002
        events.append({"type": type, **fields, "sequence_number": len(events)})

    snapshot = _in_progress_snapshot(response)
    emit("response.created", response=snapshot)
    emit("response.in_progress", response=copy.deepcopy(snapshot))
    for index, item in enumerate(response.get("output") or ()):
        _item_events(emit, index, item)
    emit(terminal_event_type(response), response=copy.deepcopy(response))
    return events


def _added(item: dict[str, Any], **empty: Any) -> dict[str, Any]:
    added = copy.deepcopy(item)
    added.update(empty)
    if "status" in item or item.get("type") in ("message", "function_call"):
        added["status"] = "in_progress"
    return added


def _item_events(emit: Callable[..., None], index: int, item: dict[str, Any]) -> None:
    kind = item.get("type")
    item_id = item.get("id")
    where = {"item_id": item_id, "output_index": index}
    if kind == "message":
        emit("response.output_item.added", output_index=index, item=_added(item, content=[]))
        for c_index, part in enumerate(item.get("content") or ()):
            _content_part_events(emit, where, c_index, part)
    elif kind == "function_call":
        emit("response.output_item.added", output_index=index, item=_added(item, arguments=""))
        arguments = item.get("arguments") or ""
        for delta in argument_chunks(arguments):
            emit("response.function_call_arguments.delta", **where, delta=delta)
        emit("response.function_call_arguments.done", **where, name=item.get("name"), arguments=arguments)
    elif kind == "reasoning":
        empty: dict[str, Any] = {"summary": []}
        if "content" in item:
            empty["content"] = []
        emit("response.output_item.added", output_index=index, item=_added(item, **empty))
        for c_index, part in enumerate(item.get("content") or ()):
            text = part.get("text") or ""
            emit("response.content_part.added", **where, content_index=c_index, part={**part, "text": ""})
            for delta in text_chunks(text):
                emit("response.reasoning_text.delta", **where, content_index=c_index, delta=delta)
            emit("response.reasoning_text.done", **where, content_index=c_index, text=text)
            emit("response.content_part.done", **where, content_index=c_index, part=copy.deepcopy(part))
        for s_index, part in enumerate(item.get("summary") or ()):
            text = part.get("text") or ""
            emit("response.reasoning_summary_part.added", **where, summary_index=s_index, part={**part, "text": ""})
            for delta in text_chunks(text):
                emit("response.reasoning_summary_text.delta", **where, summary_index=s_index, delta=delta)
            emit("response.reasoning_summary_text.done", **where, summary_index=s_index, text=text)
            emit("response.reasoning_summary_part.done", **where, summary_index=s_index, part=copy.deepcopy(part))
    else:
        emit("response.output_item.added", output_index=index, item=_added(item))
    emit("response.output_item.done", output_index=index, item=copy.deepcopy(item))


def _content_part_events(emit: Callable[..., None], where: dict[str, Any], c_index: int, part: dict[str, Any]) -> None:
    kind = part.get("type")
    at = {**where, "content_index": c_index}
    if kind == "output_text":
        text = part.get("text") or ""
        emit("response.content_part.added", **at, part={**part, "text": "", "annotations": [], "logprobs": []})
        for delta in text_chunks(text):
            emit("response.output_text.delta", **at, delta=delta, logprobs=[])
        for a_index, annotation in enumerate(part.get("annotations") or ()):
            emit(
                "response.output_text.annotation.added",
                **at,
                annotation_index=a_index,
                annotation=copy.deepcopy(annotation),
            )
        emit("response.output_text.done", **at, text=text, logprobs=copy.deepcopy(part.get("logprobs") or []))
    elif kind == "refusal":
        refusal = part.get("refusal") or ""
        emit("response.content_part.added", **at, part={**part, "refusal": ""})
        for delta in text_chunks(refusal):
            emit("response.refusal.delta", **at, delta=delta)
        emit("response.refusal.done", **at, refusal=refusal)
    else:
        emit("response.content_part.added", **at, part=copy.deepcopy(part))
    emit("response.content_part.done", **at, part=copy.deepcopy(part))
