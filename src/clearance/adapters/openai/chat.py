"""Chat Completions on the wire, Responses items inside.

The loop keeps one transcript format, the Responses API's items (``message``,
``function_call``, ``function_call_output``), whichever API a guard talks to. With
``api="chat"`` this module translates at the edge: a Responses-shaped request becomes a
``chat.completions.create`` body, a ``chat.completion`` becomes a Responses-shaped response,
and :class:`ChatStreamAssembler` turns ``chat.completion.chunk``s into the same stream events
as the Responses path. Nothing else in the adapter knows which API it speaks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from clearance.adapters.openai.streaming import _Assembler, event_dict

__all__ = ["ChatStreamAssembler", "from_chat_completion", "to_chat_request", "tool_spec"]

#: Responses request keys with a different name (or shape) on Chat Completions.
_RENAMED = {"max_output_tokens": "max_completion_tokens"}
#: Responses-only keys that have no Chat Completions meaning: the loop sets them, chat drops them.
_DROPPED = {"include", "previous_response_id", "truncation"}
#: finish_reason values that mean the answer was cut short.
_CUT_SHORT = {"length": "max_output_tokens", "content_filter": "content_filter"}


def tool_spec(responses_tool: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses function tool (flat) as Chat Completions nests it."""
    if responses_tool.get("type") != "function":
        return dict(responses_tool)
    fn = {k: v for k, v in responses_tool.items() if k != "type"}
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, Mapping):
        return choice  # "auto" | "none" | "required"
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("type") == "allowed_tools":
        tools = [{"type": "function", "function": {"name": t["name"]}} if t.get("type") == "function" else t
                 for t in choice.get("tools", [])]  # fmt: skip
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    return dict(choice)


def _response_format(fmt: Mapping[str, Any]) -> dict[str, Any]:
    if fmt.get("type") == "json_schema":
        inner = {k: v for k, v in fmt.items() if k != "type"}
        return {"type": "json_schema", "json_schema": inner}
    return dict(fmt)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if p.get("type") in ("output_text", "input_text", "text"))


def _user_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for p in content or []:
        kind = p.get("type")
        if kind in ("input_text", "text", "output_text"):
            parts.append({"type": "text", "text": p.get("text", "")})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": p.get("image_url") or p.get("file_id"),
                                                             "detail": p.get("detail", "auto")}})  # fmt: skip
        else:
            raise ValueError(f"a {kind!r} content part cannot be sent over Chat Completions")
    return parts


def _messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            content = item.get("content")
            if role == "assistant":
                msg: dict[str, Any] = {"role": "assistant", "content": _text_of(content) or None}
                refusal = "".join(p.get("refusal", "") for p in content or [] if isinstance(p, Mapping) and p.get("type") == "refusal")
                if refusal:
                    msg["refusal"] = refusal
                out.append(msg)
            else:
                out.append({"role": role, "content": _user_content(content)})
        elif kind == "function_call":
            # Calls of one turn belong to the assistant message of that turn.
            if not out or out[-1]["role"] != "assistant":
                out.append({"role": "assistant", "content": None})
            out[-1].setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
            )
        elif kind == "function_call_output":
            output = item["output"]
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": output if isinstance(output, str) else json.dumps(output)})  # fmt: skip
        elif kind == "reasoning":
            continue  # Chat Completions carries no reasoning items
        else:
            raise ValueError(f"a {kind!r} input item cannot be sent over Chat Completions")
    return out


def to_chat_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """A ``responses.create`` body (as the loop builds it) as a ``chat.completions.create`` body."""
    body: dict[str, Any] = {}
    for key, value in request.items():
        if key in _DROPPED or key in ("input", "instructions"):
            continue
        if key == "tools":
            body["tools"] = [tool_spec(t) for t in value]
        elif key == "tool_choice":
            body["tool_choice"] = _tool_choice(value)
        elif key == "text":
            if value.get("format") is not None:
                body["response_format"] = _response_format(value["format"])
            if value.get("verbosity") is not None:
                body["verbosity"] = value["verbosity"]
        elif key == "reasoning":
            if value.get("effort") is not None:
                body["reasoning_effort"] = value["effort"]
        elif key == "stream":
            body["stream"] = value
            if value:
                body["stream_options"] = {"include_usage": True, **(request.get("stream_options") or {})}
        elif key == "store":
            if value:  # OpenAI's own ``store`` flag; chat runs never chain, the guard carries the transcript
                body["store"] = True
        else:
            body[_RENAMED.get(key, key)] = value
    body["messages"] = _messages(list(request.get("input") or []), request.get("instructions"))
    return body


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    return {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0)}  # fmt: skip


def _response(cid: str | None, model: Any, message_parts: list[dict[str, Any]], calls: list[dict[str, Any]],
              finish_reason: str | None, usage: Any, raw: Any) -> dict[str, Any]:  # fmt: skip
    output: list[dict[str, Any]] = []
    if message_parts:
        output.append({"type": "message", "id": f"msg_{cid}", "role": "assistant", "status": "completed",
                       "content": message_parts})  # fmt: skip
    output.extend(calls)
    cut = _CUT_SHORT.get(finish_reason or "")
    return {
        "id": cid,
        "object": "response",
        "model": model,
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": cut} if cut else None,
        "output": output,
        "usage": _usage(usage),
        "_raw": raw,  # the provider's own response; the run's llm_response
    }


def _parts(text: str | None, refusal: str | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if text:
        parts.append({"type": "output_text", "text": text, "annotations": []})
    if refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    return parts


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}  # fmt: skip


def from_chat_completion(completion: Mapping[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` (first choice) as a Responses-shaped response the loop understands."""
    choices = completion.get("choices") or []
    if not choices:
        return {"id": completion.get("id"), "status": "failed", "output": [], "_raw": dict(completion),
                "error": {"code": "no_choices", "message": "the completion had no choices"}}  # fmt: skip
    choice = choices[0]
    msg = choice.get("message") or {}
    calls = [_call_item(tc["id"], tc["function"]["name"], tc["function"].get("arguments") or "")
             for tc in msg.get("tool_calls") or [] if tc.get("type", "function") == "function"]  # fmt: skip
    return _response(completion.get("id"), completion.get("model"), _parts(msg.get("content"), msg.get("refusal")),
                     calls, choice.get("finish_reason"), completion.get("usage"), dict(completion))  # fmt: skip


class ChatStreamAssembler(_Assembler):
    """``chat.completion.chunk``s as the adapter's stream events.

    Chat has no per-item events, so they are derived: the first text or refusal opens the
    message (``output_item_added``), the first fragment of a tool call (by ``index``) opens the
    call, later fragments are ``function_call_args_delta``; ``finish_reason`` closes them
    (``llm_text_done``, ``function_call_args_done``); the end of the stream after a
    ``finish_reason`` is ``response_done``. No ``finish_reason`` means the stream was cut.
    """

    def __init__(self) -> None:
        super().__init__()
        self.id: str | None = None
        self.model: Any = None
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self._message_open = False

    def _msg_id(self) -> str:
        return f"msg_{self.id}"

    def _open_message(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        if self._message_open:
            return []
        self._message_open = True
        item = {"type": "message", "id": self._msg_id(), "role": "assistant", "status": "in_progress", "content": []}
        return [{"type": "output_item_added", "item": item, "output_index": 0, "raw": ev}]

    def feed(self, raw: Any) -> list[dict[str, Any]]:
        ev = event_dict(raw)
        self.id = self.id or ev.get("id")
        self.model = self.model or ev.get("model")
        if ev.get("usage"):
            self.usage = ev["usage"]
        out: list[dict[str, Any]] = []
        for choice in ev.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1: the loop follows the first choice
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._open_message(ev)
                self.text.append(delta["content"])
                out.append({"type": "llm_delta", "delta": delta["content"], "item_id": self._msg_id(), "output_index": 0,
                            "content_index": 0, "raw": ev})  # fmt: skip
            if delta.get("refusal"):
                out += self._open_message(ev)
                self.refusal.append(delta["refusal"])
                out.append({"type": "refusal_delta", "delta": delta["refusal"], "item_id": self._msg_id(), "output_index": 0,
                            "content_index": 0, "raw": ev})  # fmt: skip
            for frag in delta.get("tool_calls") or []:
                out += self._tool_fragment(frag, ev)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                out += self._close(ev)
        return out

    def _tool_fragment(self, frag: Mapping[str, Any], ev: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        fn = frag.get("function") or {}
        call = self.calls.get(frag["index"])
        if call is None:
            call = _call_item(frag.get("id") or f"call_{frag['index']}", fn.get("name") or "", "", "in_progress")
            call["output_index"] = len(self.calls) + (1 if self._message_open else 0)
            self.calls[frag["index"]] = call
            out.append({"type": "output_item_added", "item": {k: v for k, v in call.items() if k != "output_index"},
                        "output_index": call["output_index"], "raw": ev})  # fmt: skip
        piece = fn.get("arguments") or ""
        if piece:
            call["arguments"] += piece
            out.append({"type": "function_call_args_delta", "delta": piece, "item_id": call["id"],
                        "output_index": call["output_index"], "raw": ev})  # fmt: skip
        return out

    def _close(self, ev: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        if self.text:
            out.append({"type": "llm_text_done", "text": "".join(self.text), "item_id": self._msg_id(), "output_index": 0,
                        "content_index": 0, "raw": ev})  # fmt: skip
        for _, call in sorted(self.calls.items()):
            out.append({"type": "function_call_args_done", "arguments": call["arguments"], "item_id": call["id"],
                        "name": call["name"], "output_index": call["output_index"], "raw": ev})  # fmt: skip
        return out

    def finish(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if self.finish_reason is not None and self.failure is None:
            calls = [{k: v for k, v in c.items() if k != "output_index"} | {"status": "completed"}
                     for _, c in sorted(self.calls.items())]  # fmt: skip
            message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None,
                                       "refusal": "".join(self.refusal) or None}  # fmt: skip
            if calls:
                message["tool_calls"] = [{"id": c["call_id"], "type": "function",
                                          "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]  # fmt: skip
            # The completion the chunks add up to, as a batch call would have returned it.
            raw = {"id": self.id, "object": "chat.completion", "model": self.model, "usage": self.usage,
                   "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}]}  # fmt: skip
            self.final = _response(self.id, self.model, _parts("".join(self.text), "".join(self.refusal)), calls,
                                   self.finish_reason, self.usage, raw)  # fmt: skip
        return super().finish()

    def _completed(self) -> list[dict[str, Any]]:
        assert self.final is not None
        if self.final["status"] == "incomplete":
            # As on the Responses wire: reported as a failure, handed on as incomplete.
            return [{"type": "response_failed", "reason": "response.incomplete", "error": self.final["incomplete_details"],
                     "response": self.final, "raw": None}]  # fmt: skip
        return [{"type": "response_done", "response": self.final, "raw": None}]
