"""Render a :class:`~clearance.testing.script.ModelTurn` into an OpenAI ``Response`` object.

The object satisfies both the official spec's ``Response`` schema and the SDK's pydantic
types under ``_strict_response_validation=True``: every required field is present, the
request's settings are echoed (``model``, ``tools`` with ``strict`` filled, ``tool_choice``,
``parallel_tool_calls``, ``instructions``, ``metadata``, ``temperature``, ``top_p``,
``store``, ``previous_response_id``, ``text``, ``reasoning``, ...), and ``usage`` carries
every detail field (``cached_tokens``, ``cache_write_tokens``, ``reasoning_tokens``).

Streaming is built on top of this later: the final ``Response`` dict is rendered first,
then decomposed into ``response.created`` ... ``response.completed`` events.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
from collections.abc import Mapping
from typing import Any

from clearance.testing.script import ModelTurn

__all__ = ["new_id", "render_output", "render_response"]

_ALNUM = string.ascii_letters + string.digits
_ID_PREFIX = {"message": "msg", "function_call": "fc", "reasoning": "rs"}


def new_id(prefix: str) -> str:
    """An OpenAI-looking id: ``prefix_`` + 48 hex chars (``call_`` ids are shorter, like OpenAI's)."""
    if prefix == "call":
        return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))
    return f"{prefix}_{secrets.token_hex(24)}"


def render_output(turn: ModelTurn) -> list[dict[str, Any]]:
    """The turn's output items with fresh ids where none were given."""
    out = []
    for template in turn.items:
        item = copy.deepcopy(dict(template))
        kind = item.get("type")
        if "id" not in item and kind in _ID_PREFIX:
            # Keep "type" first and "id" second, like OpenAI.
            item = {"type": kind, "id": new_id(_ID_PREFIX[kind]), **{k: v for k, v in item.items() if k != "type"}}
        elif "id" not in item and isinstance(kind, str):
            item["id"] = new_id(kind.split("_")[0][:8] or "item")
        if kind == "function_call" and "call_id" not in item:
            item["call_id"] = new_id("call")
        out.append(item)
    return out


def _tokens(value: Any) -> int:
    if value is None:
        return 0
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return max(1, (len(value) + 3) // 4) if value else 0


def _estimate_usage(request: Mapping[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
    input_tokens = _tokens(request.get("input")) + _tokens(request.get("instructions")) + _tokens(request.get("tools"))
    output_tokens = 0
    reasoning_tokens = 0
    for item in output:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                output_tokens += _tokens(part.get("text") or part.get("refusal"))
        elif kind == "function_call":
            output_tokens += _tokens(item.get("name")) + _tokens(item.get("arguments"))
        elif kind == "reasoning":
            texts = [s.get("text") for s in item.get("summary") or ()] + [
                c.get("text") for c in item.get("content") or ()
            ]
            reasoning_tokens += max(16, sum(_tokens(t) for t in texts))
        else:
            output_tokens += _tokens(item)
    output_tokens += reasoning_tokens
    return {
        "input_tokens": max(1, input_tokens),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": 0,  # filled below
    }


def _usage(request: Mapping[str, Any], output: list[dict[str, Any]], override: Mapping[str, Any]) -> dict[str, Any]:
    usage = _estimate_usage(request, output)
    for key, value in override.items():
        if key in ("input_tokens_details", "output_tokens_details") and isinstance(value, Mapping):
            usage[key] = {**usage[key], **value}
        else:
            usage[key] = value
    if "total_tokens" not in override:
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return usage


def _echo_tools(tools: Any) -> list[Any]:
    if not isinstance(tools, list):
        return []
    echoed = []
    for tool in tools:
        if isinstance(tool, Mapping) and tool.get("type") == "function":
            t = dict(tool)
            t.setdefault("description", None)
            t.setdefault("parameters", None)
            if not isinstance(t.get("strict"), bool):
                t["strict"] = True  # the Responses API makes function tools strict by default
            echoed.append(t)
        else:
            echoed.append(tool)
    return echoed


def _conversation(value: Any) -> Any:
    if isinstance(value, str):
        return {"id": value}
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return {"id": value["id"]}
    return None


def _service_tier(value: Any) -> str:
    if value in (None, "auto"):
        return "default"
    if value == "fast":
        return "priority"
    return str(value)


def render_response(
    turn: ModelTurn,
    request: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The full ``Response`` object for ``turn`` answering ``request`` (a CreateResponse body)."""
    output = render_output(turn)

    def echo(key: str, default: Any) -> Any:
        value = request.get(key)
        return default if value is None else copy.deepcopy(value)

    text_cfg = echo("text", {})
    if isinstance(text_cfg, dict):
        text_cfg.setdefault("format", {"type": "text"})
        text_cfg.setdefault("verbosity", "medium")
    reasoning_cfg = echo("reasoning", {})
    if isinstance(reasoning_cfg, dict):
        reasoning_cfg.setdefault("effort", None)
        reasoning_cfg.setdefault("summary", None)

    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "completed",
        "background": bool(request.get("background") or False),
        "completed_at": created_at if completed_at is None else completed_at,
        "conversation": _conversation(request.get("conversation")),
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": request.get("model"),
        "output": output,
        "parallel_tool_calls": echo("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": reasoning_cfg,
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": _service_tier(request.get("service_tier")),
        "store": echo("store", True),
        "temperature": echo("temperature", 1.0),
        "text": text_cfg,
        "tool_choice": echo("tool_choice", "auto"),
        "tools": _echo_tools(request.get("tools")),
        "top_logprobs": echo("top_logprobs", 0),
        "top_p": echo("top_p", 1.0),
        "truncation": echo("truncation", "disabled"),
        "usage": _usage(request, output, turn.usage),
        "metadata": echo("metadata", {}),
    }
    if isinstance(request.get("user"), str):
        response["user"] = request["user"]
    if request.get("prompt") is not None:
        response["prompt"] = copy.deepcopy(request["prompt"])
    response.update(copy.deepcopy(dict(turn.fields)))
    return response
