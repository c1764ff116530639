"""Function tools for OpenAI tool calling: strict JSON schemas from Python signatures.

Why this module exists: the model only ever sees a tool's JSON schema, and everything clearance
decides (the value at stake, the target, the rules that match) is read from the arguments the
model sends back. So the schema must be one OpenAI accepts in *strict* mode (the model is then
constrained to produce exactly that shape), and the arguments must be checked again on receipt,
because a tool must never run on arguments that do not fit it (and a non-OpenAI server, a replayed
transcript or a hand-written call may not honour ``strict``).

``function_tool(fn)`` reads ``fn``'s signature and docstring, builds the schema with pydantic and
rewrites it into OpenAI's strict subset:

- every object lists all its properties in ``required`` and has ``additionalProperties: false``
  (also nested models, dataclasses and ``$defs``);
- a parameter with a default, or typed ``X | None``, is *nullable* rather than optional: strict
  mode cannot leave a property out, so ``null`` stands for "use the default" and ``to_python``
  puts the Python default back;
- keywords strict mode rejects are removed: ``title`` and ``default`` (the default is written
  into the description instead); constraints it cannot enforce (``minLength``, ``maxLength``,
  ``uniqueItems``, unsupported ``format``\\ s, ...) move into the description and are still
  enforced here, by pydantic, when the arguments arrive;
- types strict mode cannot express are refused at registration with a message naming the tool and
  the parameter: ``*args``/``**kwargs``, positional-only and unannotated parameters, ``Any``,
  free-form ``dict``\\ s, tuples.

``parse_arguments`` validates what the model sent (JSON text or a dict) against that schema with
``jsonschema`` and then through pydantic, and reports problems as a ``ToolArgumentsError`` whose
``to_model_output()`` is a plain dict the model can read and correct (field path + message, never
a traceback). ``to_python`` turns the validated JSON into the keyword arguments of ``fn``
(nested models, dataclasses and enums rebuilt).

With ``parameters_schema=`` the given JSON schema is used as is (checked against the strict rules
when ``strict=True``, with a message saying what to fix), arguments are validated against it with
``jsonschema`` and passed to ``fn`` unchanged.
"""

from __future__ import annotations

import copy
import decimal
import functools
import inspect
import json
import math
import numbers
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, TypeVar, Union, overload

import docstring_parser
import jsonschema
import pydantic
from jsonschema.exceptions import ValidationError as JSONSchemaValidationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import PydanticJsonSchemaWarning

from clearance.errors import ClearanceError

__all__ = [
    "SUPPORTED_STRING_FORMATS",
    "TOOL_NAME_PATTERN",
    "FunctionTool",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "declared_tool",
    "function_tool",
    "model_schema",
    "strict_schema_problems",
]

F = TypeVar("F", bound=Callable[..., Any])

#: OpenAI's rule for function (and response-format) names.
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

#: The most a model may send as one call's arguments (JSON text, bytes). Larger proposals are
#: refused like invalid ones: otherwise the embedded engine would decide, store and audit them
#: whole, and a server (1 MB bodies by default) would refuse the decision request instead.
MAX_ARGUMENTS_BYTES = 256 * 1024

#: ``format`` values strict mode accepts for strings (OpenAI "Supported schemas").
SUPPORTED_STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)

#: Every keyword a strict schema may use. Anything else (``default``, ``oneOf``, ``allOf``, ``not``,
#: ``if``/``then``/``else``, ``patternProperties``, ``prefixItems``, ``minLength``, ...) is rejected.
_STRICT_KEYWORDS = frozenset(
    {
        # structure
        "type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const",
        "$ref", "$defs", "definitions",
        # annotations
        "description", "title",
        # strings
        "pattern", "format",
        # numbers
        "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        # arrays
        "minItems", "maxItems",
    }
)  # fmt: skip
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_TYPE_BEARING = ("type", "$ref", "anyOf", "enum", "const")
#: Keywords pydantic emits that carry no meaning for the model; dropped from generated schemas.
_DROPPED_KEYWORDS = ("title", "$schema", "$id", "$comment", "examples", "readOnly", "writeOnly", "deprecated")
#: Constraints strict mode does not accept but pydantic enforces on receipt: generated schemas keep
#: them as words in the description so the model still knows about them.
_DESCRIBED_CONSTRAINTS = ("minLength", "maxLength", "uniqueItems", "minProperties", "maxProperties")
#: Keys that may sit beside ``type`` when ``anyOf: [X, {"type": "null"}]`` is folded into
#: ``"type": [X, "null"]``; anything else (enum, const, $ref, objects) keeps the anyOf form, where
#: ``null`` stays a separate branch and the schema keeps meaning exactly the same thing.
_FOLDABLE_KEYS = frozenset(
    {"type", "format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
     "minItems", "maxItems", "items", "description"}
)  # fmt: skip

# OpenAI's documented size limits for strict schemas.
_MAX_NESTING = 10
_MAX_PROPERTIES = 5000
_MAX_ENUM_VALUES = 1000

_MISSING: Any = object()
_MAX_DETAILS_IN_MESSAGE = 5


# --------------------------------------------------------------------------------------------- errors


class ToolArgumentsError(ClearanceError):
    """Arguments the model sent that cannot be used: invalid JSON, not an object, or not fitting the schema.

    The tool is not run. ``to_model_output()`` is what goes back to the model as the call's output,
    so that it can correct itself: a stable ``error`` code, the tool, one readable ``message`` and
    ``details``, one ``{"loc": "order.items[0].qty", "msg": "..."}`` per problem (``loc`` is ``""``
    for the arguments as a whole). Nothing in it is a Python traceback.
    """

    def __init__(self, tool: str, message: str, details: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(message)
        self.tool = tool
        self.message = message
        self.details: list[dict[str, str]] = [dict(d) for d in details]

    def to_model_output(self) -> dict[str, Any]:
        """The function-call output that tells the model what to fix."""
        return {"error": "invalid_arguments", "tool": self.tool, "message": self.message, "details": list(self.details)}


class ToolDefinitionError(ClearanceError, TypeError):
    """A tool that cannot be offered to the model as declared; raised at registration, never at run time.

    The message names the tool and, where there is one, the parameter (``.parameter``), and says
    what to change. It is a ``TypeError`` too, because it is almost always about a type.
    """

    def __init__(self, message: str, *, tool: str | None = None, parameter: str | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.parameter = parameter


# ----------------------------------------------------------------------------------- the tool itself


@dataclass(frozen=True)
class _Param:
    name: str  # as in the signature and the schema
    field: str  # the field name inside the arguments model (aliases keep names like "json" safe)
    default: Any  # _MISSING when the parameter has none


@dataclass(frozen=True)
class _Binding:
    """How JSON arguments become ``fn``'s keyword arguments, for tools built from a signature."""

    model: type[pydantic.BaseModel]
    params: tuple[_Param, ...]
    strict: bool


@dataclass(frozen=True, eq=False)
class FunctionTool:
    """A Python callable offered to the model as an OpenAI function tool.

    ``parameters`` is the JSON schema exactly as it is sent to OpenAI. Build one with
    ``function_tool(fn)``; constructing it directly works too and behaves like
    ``function_tool(fn, parameters_schema=...)`` (the schema is checked, arguments are validated
    against it and passed through unchanged).

    ``value_from_args`` / ``target_from_args`` read the money (or units) at stake and the target
    from the validated arguments, for the engine's rules; a tool with nothing at stake leaves them
    out. Tools compare and hash by identity (``parameters`` is a dict).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    strict: bool = True
    value_from_args: Callable[[dict[str, Any]], float | None] | None = None
    target_from_args: Callable[[dict[str, Any]], str | None] | None = None
    #: Declared only (``declared_tool``): the model may call it and the engine decides the call,
    #: but nothing here runs it; the caller (or a structured-output or dispatch rule) handles it.
    declared: bool = False
    #: ``fn`` is a coroutine function: ``invoke`` then returns a coroutine to await.
    is_async: bool = field(init=False)
    _binding: _Binding | None = field(default=None, repr=False)
    _validator: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not callable(self.fn):
            raise ToolDefinitionError(f"tool {self.name!r}: fn must be callable, got {self.fn!r}", tool=self.name)
        for hook in ("value_from_args", "target_from_args"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise ToolDefinitionError(f"tool {self.name!r}: {hook} must be callable or None", tool=self.name)
        if not isinstance(self.description, str):
            raise ToolDefinitionError(f"tool {self.name!r}: description must be a string", tool=self.name)
        # A private copy: the caller's dict may change later, what was checked must not.
        parameters = copy.deepcopy(self.parameters)
        object.__setattr__(self, "parameters", parameters)
        _check_parameters_schema(self.name, parameters, strict=self.strict)
        object.__setattr__(self, "is_async", _is_async_callable(self.fn))
        validator_cls = jsonschema.validators.validator_for(parameters, default=jsonschema.Draft202012Validator)
        object.__setattr__(self, "_validator", validator_cls(parameters, format_checker=validator_cls.FORMAT_CHECKER))

    # -- arguments ------------------------------------------------------------------------------

    def parse_arguments(self, raw: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
        """Check what the model sent and return it as a validated plain-JSON dict.

        ``raw`` is the call's ``arguments`` (JSON text) or an already parsed object; empty text
        counts as ``{}`` (some servers send ``""`` for a call without arguments). Raises
        ``ToolArgumentsError`` for invalid JSON, a value that is not an object, or arguments that
        do not fit the schema (missing or unexpected properties, wrong types, failed constraints or
        validators). The result is a fresh dict in the JSON form the model sent, which is what the
        engine judges and the audit trail records; ``to_python`` turns it into Python objects.
        """
        if isinstance(raw, (str, bytes, bytearray)) and len(raw) * (4 if isinstance(raw, str) else 1) > MAX_ARGUMENTS_BYTES:
            size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
            if size > MAX_ARGUMENTS_BYTES:
                msg = f"arguments of {size} bytes exceed the limit of {MAX_ARGUMENTS_BYTES}"
                self._fail(msg, [{"loc": "", "msg": msg}])
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._fail(f"arguments are not UTF-8 text: {exc}", [{"loc": "", "msg": "arguments are not UTF-8 text"}])
        if isinstance(raw, str):
            if not raw.strip():
                data: Any = {}
            else:
                try:
                    data = json.loads(raw, parse_constant=_reject_constant)
                except ValueError as exc:
                    msg = f"invalid JSON: {exc}"
                    self._fail(f"arguments are not valid JSON ({exc}); send one JSON object", [{"loc": "", "msg": msg}])
                except RecursionError:  # a model's output is no reason to crash the run
                    msg = "arguments nest too deeply"
                    self._fail(f"{msg}; send one flat JSON object", [{"loc": "", "msg": msg}])
        elif isinstance(raw, Mapping):
            data = copy.deepcopy(dict(raw))
        else:
            data = raw
        if not isinstance(data, dict):
            kind = _json_type_name(data)
            self._fail(
                f"arguments must be a JSON object, got {kind}", [{"loc": "", "msg": f"expected object, got {kind}"}]
            )
        errors = list(self._validator.iter_errors(data))
        if errors:
            details = _dedupe(d for e in errors for d in _schema_error_details(e))
            self._fail_with(sorted(details, key=lambda d: (d["loc"], d["msg"])))
        if self._binding is not None:
            try:
                self._binding.model.model_validate(data)
            except pydantic.ValidationError as exc:
                self._fail_with(_pydantic_details(exc))
        return data

    def to_python(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validated arguments -> keyword arguments for ``fn``.

        Nested pydantic models, dataclasses, enums, datetimes, ... are rebuilt. A parameter with a
        default that the model left out or sent as ``null`` gets its Python default (the very
        object from the signature, as a normal call would). Tools given ``parameters_schema=``
        get the dict unchanged (as a new dict). Raises ``ToolArgumentsError`` if ``args`` does not
        validate, so passing unchecked arguments cannot slip past ``parse_arguments``.
        """
        binding = self._binding
        if binding is None:
            return dict(args)
        try:
            instance = binding.model.model_validate(dict(args))
        except pydantic.ValidationError as exc:
            self._fail_with(_pydantic_details(exc))
        kwargs: dict[str, Any] = {}
        for p in binding.params:
            if p.default is not _MISSING and (p.name not in args or (binding.strict and args[p.name] is None)):
                kwargs[p.name] = p.default
            else:
                kwargs[p.name] = getattr(instance, p.field)
        return kwargs

    def invoke(self, args: Mapping[str, Any]) -> Any:
        """Call ``fn(**to_python(args))``; for a coroutine function this returns the coroutine to await."""
        return self.fn(**self.to_python(args))

    # -- what is at stake -----------------------------------------------------------------------

    def value(self, args: Mapping[str, Any]) -> float | None:
        """The money (or units) at stake in a call with these validated arguments; ``None`` if none.

        Choice: a ``value_from_args`` that raises or returns something that is not a finite real
        number raises ``ValueError`` (naming the tool and the problem) rather than silently giving
        ``None``: a value that cannot be read must not look like "nothing at stake", which would
        let value limits pass. The agent loop answers the model with an error and the tool does not
        run. ``None`` from the hook is a legitimate "no value for this call".
        """
        if self.value_from_args is None:
            return None
        try:
            result = self.value_from_args(dict(args))
        except Exception as exc:
            raise ValueError(
                f"tool {self.name!r}: value_from_args failed on these arguments: {type(exc).__name__}: {exc}"
            ) from exc
        if result is None:
            return None
        if isinstance(result, bool) or not isinstance(result, (numbers.Real, decimal.Decimal)):
            raise ValueError(
                f"tool {self.name!r}: value_from_args must return a number or None, "
                f"got {type(result).__name__} {result!r}"
            )
        number = float(result)
        if not math.isfinite(number):
            raise ValueError(f"tool {self.name!r}: value_from_args returned {number}, not a finite number")
        if number < 0:
            raise ValueError(f"tool {self.name!r}: value_from_args returned {number:g}; what is at stake is never negative")
        return number

    def target(self, args: Mapping[str, Any]) -> str | None:
        """What the call acts on (an account, a file, ...), from ``target_from_args``; ``None`` if unset.

        Same choice as ``value``: a hook that raises or returns a non-string raises ``ValueError``.
        """
        if self.target_from_args is None:
            return None
        try:
            result = self.target_from_args(dict(args))
        except Exception as exc:
            raise ValueError(
                f"tool {self.name!r}: target_from_args failed on these arguments: {type(exc).__name__}: {exc}"
            ) from exc
        if result is not None and not isinstance(result, str):
            raise ValueError(
                f"tool {self.name!r}: target_from_args must return a string or None, got {type(result).__name__}"
            )
        return result

    # -- wire shapes ----------------------------------------------------------------------------

    def responses_spec(self) -> dict[str, Any]:
        """The tool for the Responses API (flat: ``{"type": "function", "name", ...}``); a fresh copy."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
            "strict": self.strict,
        }

    def chat_spec(self) -> dict[str, Any]:
        """The tool for Chat Completions (nested under ``"function"``); a fresh copy."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
                "strict": self.strict,
            },
        }

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, message: str, details: list[dict[str, str]]) -> typing.NoReturn:
        raise ToolArgumentsError(self.name, f"invalid arguments for tool {self.name!r}: {message}", details)

    def _fail_with(self, details: list[dict[str, str]]) -> typing.NoReturn:
        shown = "; ".join(
            f"{d['loc']}: {d['msg']}" if d["loc"] else d["msg"] for d in details[:_MAX_DETAILS_IN_MESSAGE]
        )
        more = len(details) - _MAX_DETAILS_IN_MESSAGE
        if more > 0:
            shown += f"; and {more} more"
        self._fail(shown, details)


# ------------------------------------------------------------------------------------- the factory


@overload
def function_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    parameters_schema: Mapping[str, Any] | None = None,
    value_from_args: Callable[[dict[str, Any]], float | None] | None = None,
    target_from_args: Callable[[dict[str, Any]], str | None] | None = None,
    strict: bool = True,
) -> FunctionTool: ...


@overload
def function_tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters_schema: Mapping[str, Any] | None = None,
    value_from_args: Callable[[dict[str, Any]], float | None] | None = None,
    target_from_args: Callable[[dict[str, Any]], str | None] | None = None,
    strict: bool = True,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def function_tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters_schema: Mapping[str, Any] | None = None,
    value_from_args: Callable[[dict[str, Any]], float | None] | None = None,
    target_from_args: Callable[[dict[str, Any]], str | None] | None = None,
    strict: bool = True,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Describe ``fn`` as an OpenAI function tool; also usable as ``@function_tool(...)``.

    - ``name``: defaults to ``fn.__name__``; must match ``^[a-zA-Z0-9_-]{1,64}$``.
    - ``description``: defaults to the docstring's summary and body (its Args/Parameters/
      ``:param:`` sections describe the parameters instead; Google, NumPy and reST styles).
    - ``parameters_schema``: a JSON schema to use instead of the one generated from the signature.
    - ``strict``: send ``strict: true`` (the default). With ``strict=False`` the generated schema
      keeps pydantic's optional properties and defaults and may contain free-form objects.

    Raises ``ToolDefinitionError`` for anything the model could not be asked for reliably.
    """
    if fn is None:
        return lambda f: function_tool(
            f, name=name, description=description, parameters_schema=parameters_schema,
            value_from_args=value_from_args, target_from_args=target_from_args, strict=strict,
        )  # fmt: skip
    if not callable(fn):
        raise ToolDefinitionError(f"function_tool needs a callable, got {fn!r}")
    tool_name = name if name is not None else _default_name(fn)
    _check_name(tool_name)
    doc = _parse_docstring(fn)
    if description is None:
        description = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)

    if parameters_schema is not None:
        if not isinstance(parameters_schema, Mapping):
            raise ToolDefinitionError(
                f"tool {tool_name!r}: parameters_schema must be a JSON schema object (a dict), "
                f"got {type(parameters_schema).__name__}",
                tool=tool_name,
            )
        schema = copy.deepcopy(dict(parameters_schema))
        _check_parameters_schema(tool_name, schema, strict=strict)
        _check_schema_matches_signature(tool_name, fn, schema)
        return FunctionTool(
            name=tool_name, description=description, parameters=schema, fn=fn, strict=strict,
            value_from_args=value_from_args, target_from_args=target_from_args,
        )  # fmt: skip

    schema, binding = _schema_from_signature(tool_name, fn, doc, strict=strict)
    return FunctionTool(
        name=tool_name, description=description, parameters=schema, fn=fn, strict=strict,
        value_from_args=value_from_args, target_from_args=target_from_args, _binding=binding,
    )  # fmt: skip


# ------------------------------------------------------------------------ signature -> JSON schema


def _schema_from_signature(
    tool: str, fn: Callable[..., Any], doc: docstring_parser.Docstring, *, strict: bool
) -> tuple[dict[str, Any], _Binding]:
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise ToolDefinitionError(
            f"tool {tool!r}: a type annotation of {fn!r} cannot be resolved ({exc}); "
            "define the types it names at module level",
            tool=tool,
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"tool {tool!r}: cannot read the signature of {fn!r}: {exc}", tool=tool) from exc

    param_docs = {p.arg_name: p.description for p in doc.params if p.description}
    fields: dict[str, Any] = {}
    params: list[_Param] = []
    for index, (pname, p) in enumerate(signature.parameters.items()):
        _check_parameter_kind(tool, p)
        base, metadata = _split_annotated(p.annotation)
        has_default = p.default is not inspect.Parameter.empty
        if strict and has_default and not _accepts_none(base):
            # Strict mode cannot leave a property out: null stands for "use the default".
            base = Optional[base]  # noqa: UP045 - runtime construction of a type
        extra = {"alias": pname}
        if pname in param_docs and not any(isinstance(m, FieldInfo) and m.description for m in metadata):
            extra["description"] = param_docs[pname]
        annotated = Annotated[(base, *metadata, pydantic.Field(**extra))]  # type: ignore[valid-type]
        field_name = f"p{index}"
        fields[field_name] = (annotated, p.default if has_default else ...)
        params.append(_Param(pname, field_name, p.default if has_default else _MISSING))

    model_name = re.sub(r"\W", "_", f"{tool}_arguments")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            model = pydantic.create_model(model_name, __config__=pydantic.ConfigDict(extra="forbid"), **fields)
            raw = model.model_json_schema()
    except Exception as exc:  # pydantic raises several kinds; find the parameter at fault
        culprit = _find_unsupported_parameter(signature)
        where = f"parameter {culprit[0]!r} " if culprit else ""
        reason = culprit[1] if culprit else exc
        raise ToolDefinitionError(
            f"tool {tool!r}: {where}has a type pydantic cannot describe as JSON: {reason}",
            tool=tool, parameter=culprit[0] if culprit else None,
        ) from exc  # fmt: skip

    param_names = [p.name for p in params]
    if strict:
        defaults = {name: prop.pop("default", _MISSING) for name, prop in raw.get("properties", {}).items()}
        try:
            schema = _strictify(raw, ())
        except _Problem as problem:
            parameter = _parameter_for(problem.path, raw, param_names)
            raise ToolDefinitionError(
                f"tool {tool!r}: {_describe_location(problem.path, raw, param_names)} {problem.message}",
                tool=tool, parameter=parameter,
            ) from None  # fmt: skip
        for name, default in defaults.items():
            if default is not _MISSING and default is not None:
                prop = schema["properties"][name]
                _add_description(prop, f"Default: {_json(default)} (send null to use it).")
        problems = strict_schema_problems(schema)
        if problems:  # a bug here rather than in the caller's function; still say what it is
            raise ToolDefinitionError(
                f"tool {tool!r}: generated schema is not strict: {'; '.join(problems)}", tool=tool
            )
    else:
        schema = _drop_titles(raw)
    # Root keys in a readable order: the shape first, then the definitions.
    ordered = {"type": "object", "properties": schema.get("properties", {}), "required": schema.get("required", [])}
    ordered.update({k: v for k, v in schema.items() if k not in ordered})
    return ordered, _Binding(model=model, params=tuple(params), strict=strict)


def _check_parameter_kind(tool: str, p: inspect.Parameter) -> None:
    def fail(message: str) -> typing.NoReturn:
        raise ToolDefinitionError(f"tool {tool!r}: {message}", tool=tool, parameter=p.name)

    if p.kind is inspect.Parameter.VAR_POSITIONAL:
        fail(f"parameter '*{p.name}' cannot be described: the model sends named arguments only; "
             "declare each argument as a named, typed parameter")  # fmt: skip
    if p.kind is inspect.Parameter.VAR_KEYWORD:
        fail(f"parameter '**{p.name}' is a free-form set of arguments, which strict mode cannot express; "
             "declare each argument as a named, typed parameter")  # fmt: skip
    if p.kind is inspect.Parameter.POSITIONAL_ONLY:
        fail(f"parameter {p.name!r} is positional-only (before '/'); the model's arguments are passed by name, "
             "so make it a regular parameter")  # fmt: skip
    if p.annotation is inspect.Parameter.empty:
        hint = ""
        if p.name in ("self", "cls"):
            hint = " (register the bound method, e.g. instance.method, so that self/cls is not a parameter)"
        fail(f"parameter {p.name!r} has no type annotation; the schema is built from annotations{hint}")


def _find_unsupported_parameter(signature: inspect.Signature) -> tuple[str, str] | None:
    for name, p in signature.parameters.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydantic.TypeAdapter(p.annotation).json_schema()
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return name, first_line
    return None


def _split_annotated(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, tuple(metadata)
    return annotation, ()


def _accepts_none(tp: Any) -> bool:
    if tp is None or tp is type(None) or tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _accepts_none(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return any(_accepts_none(arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return None in typing.get_args(tp)
    return False


class _Problem(Exception):
    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


_FREE_FORM_OBJECT = (
    "is a free-form object (a dict or mapping): strict mode needs every property named; describe it with a "
    "pydantic model, a dataclass or a TypedDict, or register the tool with strict=False or parameters_schema="
)
_FREE_FORM_VALUE = (
    "accepts any value (typing.Any, object or no element type): strict mode needs a concrete type; annotate it with one"
)


def _strictify(node: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
    """Rewrite one pydantic-generated schema node into OpenAI's strict subset, or raise _Problem."""
    if node is True or node == {} or not isinstance(node, dict):
        raise _Problem(path, _FREE_FORM_VALUE)
    node = dict(node)
    if "allOf" in node:  # older pydantic wraps a described $ref in a one-element allOf
        all_of = node.pop("allOf")
        if len(all_of) != 1:
            raise _Problem(path, "is an intersection of types (allOf), which strict mode does not accept")
        node = {**all_of[0], **node}
    if "oneOf" in node:  # discriminated unions: anyOf means the same for disjoint branches
        node["anyOf"] = [*node.get("anyOf", []), *node.pop("oneOf")]
    node.pop("discriminator", None)
    for key in _DROPPED_KEYWORDS:
        node.pop(key, None)
    notes: list[str] = []
    default = node.pop("default", _MISSING)
    if default is not _MISSING and default is not None:
        notes.append(f"Default: {_json(default)}.")
    constraints = [f"{key} {_json(node.pop(key))}" for key in _DESCRIBED_CONSTRAINTS if key in node]
    if "format" in node and node["format"] not in SUPPORTED_STRING_FORMATS:
        constraints.append(f"format {node.pop('format')}")
    if constraints:
        notes.append(f"Constraints: {', '.join(constraints)}.")

    if "prefixItems" in node:
        raise _Problem(
            path, "is a tuple (a fixed-length array), which strict mode cannot express; use a list or a model"
        )
    unknown = sorted(set(node) - _STRICT_KEYWORDS)
    if unknown:
        raise _Problem(path, f"uses JSON Schema keyword(s) {unknown} that strict mode does not accept")
    if not any(key in node for key in _TYPE_BEARING):
        raise _Problem(path, _FREE_FORM_VALUE)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$defs", "definitions", "properties"):
            out[key] = {name: _strictify(sub, (*path, key, name)) for name, sub in value.items()}
        elif key == "items":
            if value is True or value == {}:
                raise _Problem(path, "is a list without an element type; annotate it as list[int], list[Model], ...")
            out[key] = _strictify(value, (*path, key))
        elif key == "anyOf":
            out[key] = [_strictify(sub, (*path, key, i)) for i, sub in enumerate(value)]
        else:
            out[key] = value

    types_ = out.get("type")
    type_list = types_ if isinstance(types_, list) else [types_]
    if "object" in type_list:
        extra = out.get("additionalProperties", False)
        if "properties" not in out or extra is not False:
            raise _Problem(path, _FREE_FORM_OBJECT)
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if "array" in type_list and "items" not in out:
        raise _Problem(path, "is a list without an element type; annotate it as list[int], list[Model], ...")

    if "$ref" in out and len(out) > 1:
        # A $ref cannot have siblings in strict mode; anyOf can, so the ref goes one level down.
        out = {"anyOf": [{"$ref": out.pop("$ref")}], **out}
    out = _fold_nullable(out)
    for note in notes:
        _add_description(out, note)
    return out


def _fold_nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [{"type": "integer"}, {"type": "null"}]`` -> ``"type": ["integer", "null"]`` where exact."""
    any_of = node.get("anyOf")
    if not isinstance(any_of, list) or len(any_of) != 2 or {"type": "null"} not in any_of:
        return node
    other = any_of[0] if any_of[1] == {"type": "null"} else any_of[1]
    if (
        not isinstance(other.get("type"), str)
        or other["type"] in ("object", "null")
        or not set(other) <= _FOLDABLE_KEYS
        or ("description" in other and "description" in node)
    ):
        return node
    folded = {k: v for k, v in node.items() if k != "anyOf"}
    return {**other, **folded, "type": [other["type"], "null"]}


def _add_description(node: dict[str, Any], text: str) -> None:
    current = (node.get("description") or "").rstrip()
    if current and not current.endswith((".", "!", "?", ":", ")")):
        current += "."
    node["description"] = f"{current} {text}" if current else text


def _drop_titles(node: Any) -> Any:
    """Non-strict schemas: pydantic's output minus the ``title``\\ s (noise for the model)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _drop_titles(sub) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [_drop_titles(sub) for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _drop_titles(value)
        else:
            out[key] = value
    return out


def _refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs_in(value)


def _users_of_definition(definition: str, raw: dict[str, Any], param_names: list[str]) -> list[str]:
    """The parameters whose type reaches ``$defs[definition]``, directly or through other definitions."""
    defs = raw.get("$defs", {})
    users = []
    for name in param_names:
        seen: set[str] = set()
        stack = [ref.rsplit("/", 1)[-1] for ref in _refs_in(raw.get("properties", {}).get(name, {}))]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            stack.extend(ref.rsplit("/", 1)[-1] for ref in _refs_in(defs.get(current, {})))
        if definition in seen:
            users.append(name)
    return users


def _parameter_for(path: tuple[str | int, ...], raw: dict[str, Any], param_names: list[str]) -> str | None:
    if len(path) >= 2 and path[0] == "properties":
        return str(path[1])
    if len(path) >= 2 and path[0] == "$defs":
        users = _users_of_definition(str(path[1]), raw, param_names)
        return users[0] if users else None
    return None


def _describe_location(path: tuple[str | int, ...], raw: dict[str, Any], param_names: list[str]) -> str:
    if len(path) >= 2 and path[0] == "properties":
        rest = path[2:]
        return f"parameter {path[1]!r}" + (f" (at {_pointer(rest)})" if rest else "")
    if len(path) >= 2 and path[0] == "$defs":
        where = f"type {path[1]!r}"
        rest = path[2:]
        if len(rest) >= 2 and rest[0] == "properties":
            where += f" field {rest[1]!r}"
            rest = rest[2:]
        if rest:
            where += f" (at {_pointer(rest)})"
        users = _users_of_definition(str(path[1]), raw, param_names)
        if users:
            where += f", used by parameter {', '.join(map(repr, users))},"
        return where
    return "the parameters"


def _pointer(path: Sequence[str | int]) -> str:
    return "/".join(str(part) for part in path)


# ------------------------------------------------------------------------------ strict-mode checks


def strict_schema_problems(schema: Any) -> list[str]:
    """Everything that keeps ``schema`` from being accepted as an OpenAI strict function schema.

    An empty list means it is fine. Each problem reads ``at <json pointer>: <what to fix>``. The
    rules are OpenAI's documented strict subset: the root is an object (not ``anyOf``); every
    object lists all its properties in ``required`` and sets ``additionalProperties: false``;
    arrays say what their items are; only the supported keywords and string formats; ``$ref``
    points into this schema and stands alone; at most 10 levels of object nesting (counted in the
    tree as written, not through ``$ref``), 5000 properties and 1000 enum values.
    """
    problems: list[str] = []
    if not isinstance(schema, dict):
        return ["at /: the schema must be a JSON object"]
    if schema.get("type") != "object":
        problems.append('at /: the root must be {"type": "object", ...} (not anyOf or another type)')
    if "anyOf" in schema:
        problems.append("at /: anyOf is not allowed at the root; wrap the alternatives in a property")
    counters = {"properties": 0, "enum_values": 0}
    _check_node(schema, (), schema, 1, problems, counters)
    if counters["properties"] > _MAX_PROPERTIES:
        problems.append(
            f"at /: {counters['properties']} properties in all; strict mode allows at most {_MAX_PROPERTIES}"
        )
    if counters["enum_values"] > _MAX_ENUM_VALUES:
        problems.append(
            f"at /: {counters['enum_values']} enum values in all; strict mode allows at most {_MAX_ENUM_VALUES}"
        )
    return problems


def _check_node(
    node: Any,
    path: tuple[str | int, ...],
    root: dict[str, Any],
    depth: int,
    problems: list[str],
    counters: dict[str, int],
) -> None:
    here = "/" + _pointer(path)

    def problem(text: str) -> None:
        problems.append(f"at {here}: {text}")

    if not isinstance(node, dict):
        problem("a schema must be a JSON object (true/false schemas are not accepted)")
        return
    unknown = sorted(set(node) - _STRICT_KEYWORDS)
    for key in unknown:
        if key == "default":
            problem("remove 'default': strict mode does not accept it (make the property nullable instead)")
        elif key == "oneOf":
            problem("use anyOf instead of oneOf")
        else:
            problem(f"remove {key!r}: strict mode does not accept this keyword")

    for key in ("$defs", "definitions"):
        defs = node.get(key)
        if defs is not None:
            if not isinstance(defs, dict):
                problem(f"{key} must be an object of schemas")
            else:
                for name, sub in defs.items():
                    _check_node(sub, (*path, key, name), root, 1, problems, counters)

    if "$ref" in node:
        ref = node["$ref"]
        siblings = sorted(set(node) - {"$ref", "$defs", "definitions"})
        if siblings:
            problem(f'$ref must stand alone (found {siblings}); put it in anyOf: [{{"$ref": ...}}] to describe it')
        if not isinstance(ref, str) or not _resolves(root, ref):
            problem(f"$ref {ref!r} does not point to a definition in this schema (use '#/$defs/Name' or '#')")
        return

    if not any(key in node for key in _TYPE_BEARING):
        problem("say what the value is: a 'type' (or anyOf / enum / const / $ref) is required")
    declared = node.get("type")
    type_list = declared if isinstance(declared, list) else [declared] if declared is not None else []
    for t in type_list:
        if t not in _JSON_TYPES:
            problem(f"unknown type {t!r}")

    if "object" in type_list or "properties" in node:
        if depth > _MAX_NESTING:
            problem(f"objects are nested more than {_MAX_NESTING} levels deep")
        properties = node.get("properties")
        if not isinstance(properties, dict):
            problem("an object needs 'properties' (free-form objects cannot be expressed in strict mode)")
            properties = {}
        if node.get("additionalProperties") is not False:
            problem("set 'additionalProperties': false")
        required = node.get("required")
        if not isinstance(required, list):
            problem(f"'required' must list every property: {sorted(properties)}")
        else:
            missing = [name for name in properties if name not in required]
            if missing:
                problem(f"'required' must list every property; missing {missing} (make optional ones nullable instead)")
            strays = [name for name in required if name not in properties]
            if strays:
                problem(f"'required' names {strays}, which are not in 'properties'")
        counters["properties"] += len(properties)
        for name, sub in properties.items():
            _check_node(sub, (*path, "properties", name), root, depth + 1, problems, counters)

    if "array" in type_list or "items" in node:
        items = node.get("items")
        if not isinstance(items, dict):
            problem("an array needs 'items' describing its elements")
        else:
            _check_node(items, (*path, "items"), root, depth, problems, counters)

    any_of = node.get("anyOf")
    if any_of is not None:
        if not isinstance(any_of, list) or not any_of:
            problem("anyOf must be a non-empty list of schemas")
        else:
            for i, sub in enumerate(any_of):
                _check_node(sub, (*path, "anyOf", i), root, depth, problems, counters)

    enum = node.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not enum:
            problem("enum must be a non-empty list")
        else:
            counters["enum_values"] += len(enum)

    fmt = node.get("format")
    if fmt is not None and fmt not in SUPPORTED_STRING_FORMATS:
        problem(
            f"format {fmt!r} is not supported; use one of {sorted(SUPPORTED_STRING_FORMATS)} or describe it in words"
        )


def _resolves(root: dict[str, Any], ref: str) -> bool:
    if ref == "#":
        return True
    if not ref.startswith("#/"):
        return False
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict)


def _check_parameters_schema(tool: str, schema: Any, *, strict: bool) -> None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ToolDefinitionError(
            f'tool {tool!r}: parameters must be a JSON object schema ({{"type": "object", ...}})', tool=tool
        )
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/" + _pointer(list(exc.absolute_path))
        raise ToolDefinitionError(
            f"tool {tool!r}: parameters is not a valid JSON schema (at {where}): {exc.message}", tool=tool
        ) from None
    if strict:
        problems = strict_schema_problems(schema)
        if problems:
            raise ToolDefinitionError(
                f"tool {tool!r}: parameters do not meet OpenAI's strict-mode rules: {'; '.join(problems)}. "
                "Fix these, or register the tool with strict=False",
                tool=tool,
            )


def _check_schema_matches_signature(tool: str, fn: Callable[..., Any], schema: dict[str, Any]) -> None:
    """With ``parameters_schema=``, the arguments it describes must be ones ``fn`` can take by name."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and the like: nothing to compare with
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    properties = schema.get("properties") or {}
    accepted = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [name for name in properties if name not in accepted]
    if unknown:
        raise ToolDefinitionError(
            f"tool {tool!r}: parameters_schema has properties {unknown} that the function does not accept by name",
            tool=tool, parameter=unknown[0],
        )  # fmt: skip
    required = set(schema.get("required") or [])
    uncovered = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_POSITIONAL
        and (n not in properties or n not in required)
    ]  # fmt: skip
    if uncovered:
        raise ToolDefinitionError(
            f"tool {tool!r}: the function's parameter(s) {uncovered} have no default but are not required "
            "properties of parameters_schema, so a call could arrive without them",
            tool=tool, parameter=uncovered[0],
        )  # fmt: skip


# ------------------------------------------------------------------------------------ error details


def _schema_error_details(error: JSONSchemaValidationError) -> list[dict[str, str]]:
    """One jsonschema error -> ``{"loc", "msg"}`` entries a model can act on."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        return _union_error_details(error)
    path = list(error.absolute_path)
    kind = error.validator
    instance = error.instance
    if kind == "required" and isinstance(instance, dict):
        return [
            {"loc": _loc([*path, name]), "msg": "required property is missing"}
            for name in error.validator_value
            if name not in instance
        ]
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        msg = "unexpected property" if path else "unexpected property: the tool has no parameter of this name"
        return [{"loc": _loc([*path, name]), "msg": msg} for name in instance if name not in known]
    if kind == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return [
            {"loc": _loc(path), "msg": f"expected {' or '.join(map(str, expected))}, got {_json_type_name(instance)}"}
        ]
    if kind == "enum":
        return [{"loc": _loc(path), "msg": f"must be one of {_clip(_json(error.validator_value))}"}]
    if kind == "const":
        return [{"loc": _loc(path), "msg": f"must be {_clip(_json(error.validator_value))}"}]
    return [{"loc": _loc(path), "msg": _clip(error.message)}]


def _union_error_details(error: JSONSchemaValidationError) -> list[dict[str, str]]:
    """A value that fits no branch of an anyOf: report the branch the model evidently meant.

    Branches the value is not even the type of (``null`` for an object) are set aside, then those
    whose tag (a ``const``/``enum`` property, as in discriminated unions) does not match; of the
    rest, the one with the fewest errors is reported in full.
    """
    depth = len(error.absolute_path)
    branches: dict[Any, list[JSONSchemaValidationError]] = {}
    for sub in error.context or ():
        key = sub.relative_schema_path[0] if sub.relative_schema_path else None
        branches.setdefault(key, []).append(sub)

    def wrong_type(errs: list[JSONSchemaValidationError]) -> bool:
        return all(e.validator == "type" and len(e.absolute_path) == depth for e in errs)

    def wrong_tag(errs: list[JSONSchemaValidationError]) -> bool:
        return any(e.validator in ("const", "enum") and len(e.absolute_path) == depth + 1 for e in errs)

    candidates = [errs for errs in branches.values() if not wrong_type(errs)]
    if not candidates:
        expected: list[str] = []
        for errs in branches.values():
            for e in errs:
                values = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
                expected.extend(str(v) for v in values if str(v) not in expected)
        got = _json_type_name(error.instance)
        return [{"loc": _loc(list(error.absolute_path)), "msg": f"expected {' or '.join(expected)}, got {got}"}]
    tagged = [errs for errs in candidates if not wrong_tag(errs)]
    if not tagged:  # say which tag values exist, e.g. pet.kind must be one of ["cat", "dog"]
        allowed: dict[str, list[Any]] = {}
        for errs in candidates:
            for e in errs:
                if e.validator in ("const", "enum") and len(e.absolute_path) == depth + 1:
                    values = e.validator_value if e.validator == "enum" else [e.validator_value]
                    bucket = allowed.setdefault(_loc(list(e.absolute_path)), [])
                    bucket.extend(v for v in values if v not in bucket)
        return [{"loc": loc, "msg": f"must be one of {_clip(_json(values))}"} for loc, values in allowed.items()]
    chosen = min(tagged, key=len)
    return [d for e in chosen for d in _schema_error_details(e)]


def _pydantic_details(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    return _dedupe(
        {"loc": _loc(list(err.get("loc", ()))), "msg": _clip(str(err.get("msg", "invalid value")))}
        for err in exc.errors(include_url=False, include_input=False)
    )


def _dedupe(details: Iterator[dict[str, str]] | Sequence[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for d in details:
        key = (d["loc"], d["msg"])
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _loc(path: Sequence[Any]) -> str:
    """``["order", "items", 0, "qty"]`` -> ``"order.items[0].qty"``; ``""`` for the whole object."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ------------------------------------------------------------------------------------ small helpers


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
        raise ToolDefinitionError(
            f"invalid tool name {name!r}: OpenAI needs 1-64 characters from a-z, A-Z, 0-9, '_' and '-'; pass name=",
            tool=name if isinstance(name, str) else None,
        )


def _unwrap_partial(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _default_name(fn: Callable[..., Any]) -> str:
    name = getattr(_unwrap_partial(fn), "__name__", None)
    if not isinstance(name, str):
        raise ToolDefinitionError(f"cannot name a tool after {fn!r} (it has no __name__); pass name=")
    return name


def _parse_docstring(fn: Callable[..., Any]) -> docstring_parser.Docstring:
    target = _unwrap_partial(fn)
    text = inspect.getdoc(target) or ""
    try:
        return docstring_parser.parse(text)
    except docstring_parser.ParseError:
        return docstring_parser.parse("")  # an odd docstring costs its descriptions, not the tool


def _is_async_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    inner = _unwrap_partial(fn)
    if inspect.iscoroutinefunction(inner):
        return True
    call = getattr(inner, "__call__", None)  # noqa: B004 - instances with an async __call__
    return not inspect.isroutine(inner) and call is not None and inspect.iscoroutinefunction(call)


def _declared_only(**_: Any) -> Any:
    raise ToolDefinitionError("a declared tool has no function to run")


def declared_tool(
    name: str,
    parameters: Mapping[str, Any],
    *,
    description: str = "",
    strict: bool = True,
    value_from_args: Callable[[dict[str, Any]], float | None] | None = None,
    target_from_args: Callable[[dict[str, Any]], str | None] | None = None,
) -> FunctionTool:
    """A tool the model can call that has no Python function: its calls are decided and handed back.

    What workflow steps configure (openai-chat-engram's ``tools``): a name, a description and a
    parameters schema; the call itself is carried out by whoever receives it.
    """
    return FunctionTool(name=name, description=description, parameters=dict(parameters), fn=_declared_only,
                        strict=strict, value_from_args=value_from_args, target_from_args=target_from_args,
                        declared=True)  # fmt: skip


def model_schema(model: type[pydantic.BaseModel], *, strict: bool = True) -> dict[str, Any]:
    """A pydantic model as the JSON schema OpenAI's structured outputs take (strict by default).

    Raises ``ToolDefinitionError`` for a model strict mode cannot express, naming where.
    """
    raw = model.model_json_schema()
    if not strict:
        return _drop_titles(raw)  # type: ignore[no-any-return]
    for prop in raw.get("properties", {}).values():
        prop.pop("default", None)
    try:
        schema = _strictify(raw, ())
    except _Problem as problem:
        where = "/".join(str(p) for p in problem.path) or "the model"
        raise ToolDefinitionError(f"{model.__name__}: at {where}: {problem.message}") from None
    problems = strict_schema_problems(schema)
    if problems:
        raise ToolDefinitionError(f"{model.__name__}: not expressible in strict mode: {'; '.join(problems)}")
    return schema
