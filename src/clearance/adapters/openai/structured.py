"""Structured output: ``response_format=`` a pydantic model or a JSON schema.

It is sent as the Responses API's ``text.format`` (the Chat wire turns that into
``response_format.json_schema``); the loop parses and checks the answer into ``structured``
(``loop._completed``); here a pydantic model's answer becomes an instance of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pydantic

from clearance.adapters.openai.tools import model_schema, strict_schema_problems
from clearance.errors import StructuredOutputError

__all__ = ["ResponseFormat", "text_format", "typed"]

ResponseFormat = type[pydantic.BaseModel] | Mapping[str, Any]


def _is_model(fmt: Any) -> bool:
    return isinstance(fmt, type) and issubclass(fmt, pydantic.BaseModel)


def _name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)[:64] or "response"


def text_format(fmt: ResponseFormat) -> dict[str, Any]:
    """The Responses API ``text.format`` for a pydantic model, a JSON schema or a format dict.

    Accepted dicts: Responses' own (``{"type": "json_schema", "name", "schema", "strict"}``),
    Chat's and the engram's (``{"type": "json_schema", "json_schema" | "jsonSchema": {...}}``),
    ``{"type": "json_object"}``, ``{"type": "text"}``, or a bare object schema.
    """
    if _is_model(fmt):
        model: type[pydantic.BaseModel] = fmt  # type: ignore[assignment]
        out = {"type": "json_schema", "name": _name(model.__name__), "schema": model_schema(model), "strict": True}
        if model.__doc__ and model.__doc__ != pydantic.BaseModel.__doc__:
            out["description"] = model.__doc__.strip()
        return out
    if not isinstance(fmt, Mapping):
        raise TypeError(f"response_format must be a pydantic model class or a dict, not {type(fmt).__name__}")
    kind = fmt.get("type")
    if kind == "json_schema":
        inner = fmt.get("json_schema", fmt.get("jsonSchema"))
        spec = dict(inner) if isinstance(inner, Mapping) else {k: v for k, v in fmt.items() if k != "type"}
        if not isinstance(spec.get("schema"), Mapping):
            raise ValueError("a json_schema response format needs a 'schema' object")
        spec.setdefault("name", "response")
        spec.setdefault("strict", not strict_schema_problems(dict(spec["schema"])))
        return {"type": "json_schema", **spec}
    if kind in ("json_object", "text"):
        return {"type": kind}
    if kind == "object" or "properties" in fmt:
        schema = dict(fmt)
        return {"type": "json_schema", "name": _name(str(schema.get("title", "response"))), "schema": schema,
                "strict": not strict_schema_problems(schema)}  # fmt: skip
    raise ValueError(f"unknown response format type {kind!r}: use json_schema, json_object, text or a JSON schema")


def typed(result: dict[str, Any], fmt: ResponseFormat | None) -> dict[str, Any]:
    """With a pydantic model as the format, ``structured`` becomes an instance of it."""
    if fmt is None or not _is_model(fmt) or result.get("structured") is None or result.get("status") != "completed":
        return result
    try:
        result["structured"] = fmt.model_validate(result["structured"])  # type: ignore[union-attr]
    except pydantic.ValidationError as exc:
        errors = [f"/{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise StructuredOutputError(f"the model's answer does not fit {fmt.__name__}: {'; '.join(errors)}",  # type: ignore[union-attr]
                                    result=result, errors=errors) from None  # fmt: skip
    return result
