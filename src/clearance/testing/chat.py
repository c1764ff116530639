"""Render a :class:`~clearance.testing.script.ModelTurn` as an OpenAI Chat Completion.

The same scripted turns that answer ``POST .../responses`` answer ``POST .../chat/completions``;
this module maps a turn's output items onto the Chat Completions shapes:

- ``message`` items: their ``output_text`` parts are joined into ``message.content``
  (``null`` when there is none), their ``refusal`` parts into ``message.refusal``;
  ``url_citation`` annotations become ``{"type": "url_citation", "url_citation": {...}}``
  (offsets shifted into the joined text; other annotation kinds are dropped).
- ``function_call`` items become ``message.tool_calls``:
  ``{"id": <call_id>, "type": "function", "function": {"name", "arguments"}}`` (the
  ``arguments`` string is sent verbatim, so :func:`turn.raw_function_call` still sends
  malformed JSON).
- ``reasoning`` items render as nothing: Chat Completions has no reasoning items (and
  ``reasoning_content`` is not part of OpenAI's API), only
  ``usage.completion_tokens_details.reasoning_tokens`` counts them.
- any other item type cannot be rendered: :class:`ChatRenderError` (the server reports a
  script problem, HTTP 500 with ``x-should-retry: false``).

``finish_reason``: ``length`` for an incomplete turn (``turn.incomplete()``;
``content_filter`` when its reason is ``content_filter``), else ``tool_calls`` when the
message has tool calls, else ``stop``. A failed turn (``turn.failed()``) has no chat
rendering as a completion: the server answers it with HTTP 500 and OpenAI's error envelope
(see :func:`failed_error`), streamed or not.

``usage`` is estimated like the Responses usage (``ModelTurn.with_usage`` overrides map
over: ``input_tokens`` -> ``prompt_tokens``, ``output_tokens`` -> ``completion_tokens``,
``cached_tokens`` -> ``prompt_tokens_details.cached_tokens``, ``reasoning_tokens`` ->
``completion_tokens_details.reasoning_tokens``). A request with ``n`` > 1 gets ``n``
choices, each a fresh rendering of the turn (own call ids). ``ModelTurn.with_chat_fields``
is merged last into the top level of the ``chat.completion`` object.

Streaming (:func:`chat_chunks`) decomposes the rendered completion into
``chat.completion.chunk`` objects, sent as data-only SSE (``data: {...}\\n\\n``) and ended
by ``data: [DONE]``. Per choice, in order:

    {"delta": {"role": "assistant", "content": "" | null, "refusal": "" | null}}   role chunk
    {"delta": {"content": "<word>"}} ...                                   content deltas
    {"delta": {"refusal": "<word>"}} ...                                   refusal deltas
    {"delta": {"tool_calls": [{"index": i, "id", "type": "function",
                               "function": {"name", "arguments": ""}}]}}   first fragment of call i
    {"delta": {"tool_calls": [{"index": i, "function": {"arguments": "<piece>"}}]}} ...
    {"delta": {}, "finish_reason": "stop" | "tool_calls" | "length" | ...}  finish chunk
then, when the request has ``stream_options: {"include_usage": true}``, one chunk with
``choices: []`` and ``usage`` (every other chunk then carries ``"usage": null``, as the
live API does). Calls are streamed one after the other unless the turn is
``.streamed(interleave_tool_calls=True)``: then their fragments alternate (all first
fragments, then the argument pieces round-robin). Annotations are not streamed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from clearance.testing.responses import _service_tier, _usage, new_id, render_output
from clearance.testing.script import ModelTurn
from clearance.testing.stream import argument_chunks, text_chunks

__all__ = [
    "DONE_FRAME",
    "ChatRenderError",
    "chat_chunks",
    "chat_usage",
    "encode_chunk",
    "failed_error",
    "render_chat_completion",
]

#: The frame that ends a successful Chat Completions stream.
DONE_FRAME = b"data: [DONE]\n\n"

#: A fixed stand-in for OpenAI's (deprecated) ``system_fingerprint``.
SYSTEM_FINGERPRINT = "fp_scripted"


class ChatRenderError(ValueError):
    """A turn that has no Chat Completions rendering (e.g. an output item chat cannot carry)."""


def failed_error(turn: ModelTurn) -> dict[str, Any] | None:
    """For a failed turn (``status`` failed/cancelled), the error envelope chat replies with; else ``None``."""
    if turn.fields.get("status") not in ("failed", "cancelled"):
        return None
    error = turn.fields.get("error") or {}
    return {
        "error": {
            "message": error.get("message") or "The model failed to generate a response.",
            "type": "server_error",
            "param": None,
            "code": error.get("code"),
        }
    }


def _finish_reason(turn: ModelTurn, message: Mapping[str, Any]) -> str:
    if turn.fields.get("status") == "incomplete":
        details = turn.fields.get("incomplete_details") or {}
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    return "tool_calls" if message.get("tool_calls") else "stop"


def _chat_annotation(annotation: Mapping[str, Any], offset: int) -> dict[str, Any] | None:
    if annotation.get("type") != "url_citation":
        return None
    return {
        "type": "url_citation",
        "url_citation": {
            "end_index": int(annotation.get("end_index") or 0) + offset,
            "start_index": int(annotation.get("start_index") or 0) + offset,
            "url": annotation.get("url") or "",
            "title": annotation.get("title") or "",
        },
    }


def _message(output: list[dict[str, Any]]) -> dict[str, Any]:
    texts: list[str] = []
    refusals: list[str] = []
    annotations: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for item in output:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    offset = sum(len(t) for t in texts)
                    for a in part.get("annotations") or ():
                        converted = _chat_annotation(a, offset)
                        if converted is not None:
                            annotations.append(converted)
                    texts.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal") or "")
                else:
                    raise ChatRenderError(f"message content part {part.get('type')!r} has no Chat Completions rendering")
        elif kind == "function_call":
            tool_calls.append(
                {
                    "id": item.get("call_id") or new_id("call"),
                    "type": "function",
                    "function": {"name": item.get("name") or "", "arguments": item.get("arguments") or ""},
                }
            )
        elif kind == "reasoning":
            continue  # chat has no reasoning items; only the usage counts them
        else:
            raise ChatRenderError(f"output item type {kind!r} has no Chat Completions rendering")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": "".join(refusals) if refusals else None,
        "annotations": annotations,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_usage(
    request: Mapping[str, Any], output: list[dict[str, Any]], override: Mapping[str, Any]
) -> dict[str, Any]:
    """``CompletionUsage`` for ``output`` answering ``request`` (overrides use Responses usage keys)."""
    usage = _usage({"input": request.get("messages"), "tools": request.get("tools")}, output, override)
    details_in = usage.get("input_tokens_details") or {}
    details_out = usage.get("output_tokens_details") or {}
    prompt_details: dict[str, Any] = {"cached_tokens": details_in.get("cached_tokens", 0), "audio_tokens": 0}
    if details_in.get("cache_write_tokens"):
        prompt_details["cache_write_tokens"] = details_in["cache_write_tokens"]
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": details_out.get("reasoning_tokens", 0),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def render_chat_completion(
    turn: ModelTurn, request: Mapping[str, Any], *, completion_id: str, created: int
) -> dict[str, Any]:
    """The ``chat.completion`` object for ``turn`` answering ``request`` (a CreateChatCompletion body).

    Raises :class:`ChatRenderError` when the turn holds something chat cannot carry.
    """
    n = request.get("n")
    n = n if isinstance(n, int) and n > 0 else 1
    choices = []
    outputs: list[dict[str, Any]] = []
    for index in range(n):
        output = render_output(turn)
        outputs.extend(output)
        message = _message(output)
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": _finish_reason(turn, message)}
        )
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": request.get("model"),
        "choices": choices,
        "usage": chat_usage(request, outputs, turn.usage),
        "service_tier": _service_tier(request.get("service_tier")),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if isinstance(request.get("metadata"), Mapping):
        body["metadata"] = copy.deepcopy(dict(request["metadata"]))
    body.update(copy.deepcopy(dict(turn.chat_fields)))
    return body


def _choice_deltas(message: Mapping[str, Any], interleave: bool) -> list[dict[str, Any]]:
    """The deltas of one choice, role chunk first, finish chunk excluded."""
    content, refusal = message.get("content"), message.get("refusal")
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": "" if content is not None else None, "refusal": "" if refusal is not None else None}
    ]
    deltas.extend({"content": piece} for piece in text_chunks(content or ""))
    deltas.extend({"refusal": piece} for piece in text_chunks(refusal or ""))
    streams: list[list[dict[str, Any]]] = []
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        head = {
            "index": index,
            "id": call.get("id"),
            "type": "function",
            "function": {"name": function.get("name"), "arguments": ""},
        }
        pieces = [{"index": index, "function": {"arguments": p}} for p in argument_chunks(function.get("arguments") or "")]
        streams.append([head, *pieces])
    if interleave and len(streams) > 1:
        ordered = [s[0] for s in streams]
        longest = max(len(s) for s in streams)
        for step in range(1, longest):
            ordered.extend(s[step] for s in streams if step < len(s))
    else:
        ordered = [fragment for s in streams for fragment in s]
    deltas.extend({"tool_calls": [fragment]} for fragment in ordered)
    return deltas


def chat_chunks(
    completion: Mapping[str, Any], request: Mapping[str, Any], *, interleave_tool_calls: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """The ``chat.completion.chunk`` objects that stream ``completion``, and how many come
    before the first finish chunk (the most a cut or errored stream may deliver).

    The ``[DONE]`` sentinel is not among them (see :data:`DONE_FRAME`).
    """
    options = request.get("stream_options")
    include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    base: dict[str, Any] = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
        "service_tier": completion.get("service_tier"),
        "system_fingerprint": completion.get("system_fingerprint"),
    }
    base = {k: v for k, v in base.items() if v is not None or k in ("model",)}

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        out = {**copy.deepcopy(base), "choices": choices}
        if include_usage:
            out["usage"] = None
        return out

    chunks: list[dict[str, Any]] = []
    before_finish: int | None = None
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        for delta in _choice_deltas(choice.get("message") or {}, interleave_tool_calls):
            chunks.append(chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]))
        if before_finish is None:
            before_finish = len(chunks)
        chunks.append(
            chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason")}])
        )
    if include_usage:
        chunks.append({**copy.deepcopy(base), "choices": [], "usage": copy.deepcopy(completion.get("usage"))})
    return chunks, len(chunks) if before_finish is None else before_finish


def encode_chunk(payload: Mapping[str, Any]) -> bytes:
    """One data-only SSE frame: ``data: <compact json>\\n\\n`` (no ``event:`` line)."""
    import json

    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
