"""Function tools: strict schemas from signatures, argument checking, wire shapes."""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import enum
import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from pydantic import BaseModel, Field, field_validator

from clearance.adapters.openai.tools import (
    FunctionTool,
    ToolArgumentsError,
    ToolDefinitionError,
    function_tool,
    strict_schema_problems,
)
from clearance.errors import ClearanceError

# ------------------------------------------------------------------ types used by the tools below
# (module level, so that string annotations under `from __future__ import annotations` resolve)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class LineItem(BaseModel):
    """One line of an order."""

    sku: str
    qty: int = 1
    note: str | None = None


class Order(BaseModel):
    order_id: str
    lines: list[LineItem]


@dataclasses.dataclass
class Address:
    street: str
    city: str = "Paris"


class Meta(BaseModel):
    tags: dict[str, str]


class Holder(BaseModel):
    meta: Meta


class Node(BaseModel):
    name: str
    children: list[Node]


class Cat(BaseModel):
    kind: Literal["cat"]
    meows: bool


class Dog(BaseModel):
    kind: Literal["dog"]
    barks: int


class Positive(BaseModel):
    amount: float

    @field_validator("amount")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("amount must be positive")
        return v


def _object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


# ------------------------------------------------------------------------------ exact schemas


def test_simple_scalars() -> None:
    def refund_payment(order_id: str, amount: float, count: int, notify: bool) -> dict[str, Any]:
        return {}

    tool = function_tool(refund_payment)
    assert tool.name == "refund_payment"
    assert tool.description == ""
    assert tool.strict is True
    assert tool.parameters == _object(
        {
            "order_id": {"type": "string"},
            "amount": {"type": "number"},
            "count": {"type": "integer"},
            "notify": {"type": "boolean"},
        }
    )


def test_no_parameters() -> None:
    def ping() -> str:
        return "pong"

    assert function_tool(ping).parameters == _object({})


def test_optional_with_default_is_nullable_and_required() -> None:
    def search(query: str, limit: int = 10, exact: bool = False, cursor: str | None = None) -> None: ...

    assert function_tool(search).parameters == _object(
        {
            "query": {"type": "string"},
            "limit": {"type": ["integer", "null"], "description": "Default: 10 (send null to use it)."},
            "exact": {"type": ["boolean", "null"], "description": "Default: false (send null to use it)."},
            "cursor": {"type": ["string", "null"]},
        }
    )


def test_x_or_none_without_default_is_required_nullable() -> None:
    def annotate(note: str | None, score: Optional[float]) -> None: ...  # noqa: UP045 - both spellings

    assert function_tool(annotate).parameters == _object(
        {"note": {"type": ["string", "null"]}, "score": {"type": ["number", "null"]}}
    )


def test_lists() -> None:
    def batch(ids: list[int], names: list[str] | None = None) -> None: ...

    assert function_tool(batch).parameters == _object(
        {
            "ids": {"type": "array", "items": {"type": "integer"}},
            "names": {"type": ["array", "null"], "items": {"type": "string"}},
        }
    )


def test_literal_and_enum() -> None:
    def paint(mode: Literal["fast", "slow"], color: Color, finish: Literal["matte", "gloss"] = "matte") -> None: ...

    assert function_tool(paint).parameters == _object(
        {
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "color": {"$ref": "#/$defs/Color"},
            "finish": {
                "anyOf": [{"type": "string", "enum": ["matte", "gloss"]}, {"type": "null"}],
                "description": 'Default: "matte" (send null to use it).',
            },
        },
        **{"$defs": {"Color": {"type": "string", "enum": ["red", "green"]}}},
    )


def test_nested_pydantic_model() -> None:
    def place(order: Order) -> None: ...

    assert function_tool(place).parameters == _object(
        {"order": {"$ref": "#/$defs/Order"}},
        **{
            "$defs": {
                "LineItem": _object(
                    {
                        "sku": {"type": "string"},
                        "qty": {"type": "integer", "description": "Default: 1."},
                        "note": {"type": ["string", "null"]},
                    },
                    description="One line of an order.",
                ),
                "Order": _object(
                    {"order_id": {"type": "string"}, "lines": {"type": "array", "items": {"$ref": "#/$defs/LineItem"}}}
                ),
            }
        },
    )


def test_dataclass() -> None:
    def ship(to: Address, backup: Address | None = None) -> None: ...

    assert function_tool(ship).parameters == _object(
        {"to": {"$ref": "#/$defs/Address"}, "backup": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]}},
        **{
            "$defs": {
                "Address": _object(
                    {"street": {"type": "string"}, "city": {"type": "string", "description": 'Default: "Paris".'}}
                )
            }
        },
    )


def test_annotated_field_descriptions_and_constraints() -> None:
    def transfer(
        amount: Annotated[float, Field(description="Amount in EUR.", ge=0, le=10_000)],
        memo: Annotated[str, Field(description="Shown to the payee", max_length=40)],
        order: Annotated[Order, Field(description="The order it pays for.")],
    ) -> None: ...

    params = function_tool(transfer).parameters
    assert params["properties"]["amount"] == {
        "type": "number",
        "minimum": 0,
        "maximum": 10_000,
        "description": "Amount in EUR.",
    }
    # maxLength is not a strict-mode keyword: it moves into words, and is still enforced on receipt.
    assert params["properties"]["memo"] == {
        "type": "string",
        "description": "Shown to the payee. Constraints: maxLength 40.",
    }
    # A $ref cannot have siblings in strict mode: it goes into a one-branch anyOf.
    assert params["properties"]["order"] == {
        "anyOf": [{"$ref": "#/$defs/Order"}],
        "description": "The order it pays for.",
    }
    assert strict_schema_problems(params) == []


def test_string_annotations_are_resolved() -> None:
    def lookup(sku: str, color: Color | None = None) -> None: ...

    params = function_tool(lookup).parameters  # this module uses `from __future__ import annotations`
    assert params["properties"]["sku"] == {"type": "string"}
    assert params["properties"]["color"] == {"anyOf": [{"$ref": "#/$defs/Color"}, {"type": "null"}]}


def test_recursive_model_and_discriminated_union() -> None:
    def adopt(tree: Node, pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]) -> None: ...  # noqa: UP007

    tool = function_tool(adopt)
    params = tool.parameters
    assert params["properties"]["pet"] == {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}
    assert params["$defs"]["Node"]["properties"]["children"] == {"type": "array", "items": {"$ref": "#/$defs/Node"}}
    assert strict_schema_problems(params) == []
    kwargs = tool.to_python(
        tool.parse_arguments(
            {"tree": {"name": "a", "children": [{"name": "b", "children": []}]}, "pet": {"kind": "dog", "barks": 2}}
        )
    )
    assert kwargs["tree"] == Node(name="a", children=[Node(name="b", children=[])])
    assert kwargs["pet"] == Dog(kind="dog", barks=2)


def test_parameter_names_that_clash_with_pydantic_attributes() -> None:
    def query(json: str, schema: str, model_config: int, copy: bool) -> None: ...

    tool = function_tool(query)
    assert list(tool.parameters["properties"]) == ["json", "schema", "model_config", "copy"]
    args = tool.parse_arguments('{"json": "a", "schema": "b", "model_config": 1, "copy": true}')
    assert tool.to_python(args) == {"json": "a", "schema": "b", "model_config": 1, "copy": True}


# --------------------------------------------------------------------------------- docstrings


def _google(order_id: str, amount: float) -> None:
    """Refund a payment.

    Use only for settled payments.

    Args:
        order_id: The order to refund.
        amount (float): How much to refund,
            in euros.

    Returns:
        Nothing.
    """


def _numpy(order_id: str, amount: float) -> None:
    """Refund a payment.

    Use only for settled payments.

    Parameters
    ----------
    order_id : str
        The order to refund.
    amount : float
        How much to refund,
        in euros.

    Returns
    -------
    None
    """


def _rest(order_id: str, amount: float) -> None:
    """Refund a payment.

    Use only for settled payments.

    :param order_id: The order to refund.
    :param float amount: How much to refund,
        in euros.
    :returns: Nothing.
    """


@pytest.mark.parametrize("fn", [_google, _numpy, _rest], ids=["google", "numpy", "rest"])
def test_docstring_styles(fn: Any) -> None:
    tool = function_tool(fn, name="refund")
    assert tool.description == "Refund a payment.\n\nUse only for settled payments."
    props = tool.parameters["properties"]
    assert props["order_id"] == {"type": "string", "description": "The order to refund."}
    assert props["amount"]["type"] == "number"
    assert " ".join(props["amount"]["description"].split()) == "How much to refund, in euros."


def test_explicit_description_and_field_description_win() -> None:
    def fn(a: Annotated[int, Field(description="from Field")], b: int) -> None:
        """Docstring summary.

        Args:
            a: from docstring
            b: b from docstring
        """

    tool = function_tool(fn, description="Given description.")
    assert tool.description == "Given description."
    assert tool.parameters["properties"]["a"]["description"] == "from Field"
    assert tool.parameters["properties"]["b"]["description"] == "b from docstring"


# --------------------------------------------------------------------------------- rejections


def _rejected(fn: Any, **kwargs: Any) -> ToolDefinitionError:
    with pytest.raises(ToolDefinitionError) as info:
        function_tool(fn, **kwargs)
    return info.value


def test_rejects_var_positional() -> None:
    def fn(a: int, *rest: int) -> None: ...

    err = _rejected(fn)
    assert err.tool == "fn" and err.parameter == "rest"
    assert "'fn'" in str(err) and "*rest" in str(err)


def test_rejects_var_keyword() -> None:
    def fn(a: int, **options: str) -> None: ...

    err = _rejected(fn)
    assert err.parameter == "options" and "**options" in str(err) and "'fn'" in str(err)


def test_rejects_positional_only() -> None:
    def fn(a: int, /, b: int) -> None: ...

    err = _rejected(fn)
    assert err.parameter == "a" and "positional-only" in str(err)


def test_rejects_untyped_parameter() -> None:
    def fn(a, b: int) -> None:  # type: ignore[no-untyped-def]
        ...

    err = _rejected(fn)
    assert err.parameter == "a" and "no type annotation" in str(err) and "'fn'" in str(err)


@pytest.mark.parametrize("annotation", [dict, dict[str, Any], dict[str, int], "dict[str, Any] | None"])
def test_rejects_free_form_dicts(annotation: Any) -> None:
    def fn(meta: int) -> None: ...

    fn.__annotations__["meta"] = annotation
    err = _rejected(fn)
    assert err.parameter == "meta" and "free-form object" in str(err) and "'fn'" in str(err)


@pytest.mark.parametrize("annotation", [Any, object, list, "list[Any]"])
def test_rejects_untyped_values(annotation: Any) -> None:
    def fn(v: int) -> None: ...

    fn.__annotations__["v"] = annotation
    err = _rejected(fn)
    assert err.parameter == "v" and "'fn'" in str(err)
    assert "any value" in str(err) or "without an element type" in str(err)


def test_rejects_free_form_dict_inside_nested_model_naming_the_parameter() -> None:
    def fn(holder: Holder) -> None: ...

    err = _rejected(fn)
    assert err.parameter == "holder"
    assert "'Meta' field 'tags'" in str(err) and "'holder'" in str(err) and "free-form object" in str(err)


def test_rejects_tuples_and_undescribable_types() -> None:
    def pair(p: tuple[int, str]) -> None: ...

    def call(cb: Callable[[int], int]) -> None: ...

    assert "tuple" in str(_rejected(pair))
    err = _rejected(call)
    assert err.parameter == "cb" and "cannot describe" in str(err)


def test_unbound_method_hint_and_bound_method_ok() -> None:
    class Payments:
        def refund(self, order_id: str) -> str:
            return f"refunded {order_id}"

    err = _rejected(Payments.refund)
    assert err.parameter == "self" and "bound method" in str(err)
    tool = function_tool(Payments().refund)
    assert tool.name == "refund"
    assert tool.parameters == _object({"order_id": {"type": "string"}})
    assert tool.invoke({"order_id": "o1"}) == "refunded o1"


@pytest.mark.parametrize("name", ["", "has space", "dots.not.ok", "x" * 65, "émoji"])
def test_rejects_invalid_names(name: str) -> None:
    def fn() -> None: ...

    err = _rejected(fn, name=name)
    assert "invalid tool name" in str(err)


def test_lambda_needs_a_name() -> None:
    err = _rejected(lambda a: a)
    assert "<lambda>" in str(err) and "name=" in str(err)
    assert function_tool(lambda: None, name="x" * 64).name == "x" * 64


def test_unresolvable_annotation() -> None:
    def fn(a: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined] # noqa: F821

    assert "cannot be resolved" in str(_rejected(fn))


def test_definition_errors_are_clearance_and_type_errors() -> None:
    assert issubclass(ToolDefinitionError, ClearanceError) and issubclass(ToolDefinitionError, TypeError)
    assert issubclass(ToolArgumentsError, ClearanceError)


# --------------------------------------------------------------------------- parse_arguments


def _refund(
    order_id: str, amount: float, currency: Literal["EUR", "USD"] = "EUR", lines: list[LineItem] | None = None
) -> dict[str, Any]:
    return {"order_id": order_id, "amount": amount, "currency": currency, "lines": lines}


@pytest.fixture
def refund() -> FunctionTool:
    return function_tool(_refund, name="refund_payment", value_from_args=lambda a: a["amount"])


def _arguments_error(tool: FunctionTool, raw: Any) -> ToolArgumentsError:
    with pytest.raises(ToolArgumentsError) as info:
        tool.parse_arguments(raw)
    err = info.value
    out = err.to_model_output()
    assert set(out) == {"error", "tool", "message", "details"}
    assert out["error"] == "invalid_arguments" and out["tool"] == tool.name
    assert json.loads(json.dumps(out)) == out  # plain JSON for the model
    assert "Traceback" not in out["message"] and all(set(d) == {"loc", "msg"} for d in out["details"])
    return err


def test_parse_valid_json(refund: FunctionTool) -> None:
    raw = '{"order_id": "ord_1", "amount": 199.5, "currency": null, "lines": [{"sku": "a", "qty": 2, "note": null}]}'
    assert refund.parse_arguments(raw) == json.loads(raw)
    assert refund.parse_arguments(raw.encode()) == json.loads(raw)


def test_parse_dict_returns_a_copy(refund: FunctionTool) -> None:
    given = {"order_id": "o", "amount": 1, "currency": "USD", "lines": [{"sku": "a", "qty": 1, "note": None}]}
    parsed = refund.parse_arguments(given)
    assert parsed == given
    parsed["lines"][0]["sku"] = "changed"
    assert given["lines"][0]["sku"] == "a"


def test_parse_invalid_json(refund: FunctionTool) -> None:
    err = _arguments_error(refund, '{"order_id": "o", amount: 1}')
    assert "not valid JSON" in err.message and err.details[0]["loc"] == ""
    assert "NaN" in _arguments_error(refund, '{"order_id": "o", "amount": NaN}').message


@pytest.mark.parametrize(
    ("raw", "kind"), [("[1, 2]", "array"), ('"text"', "string"), ("3", "integer"), ("null", "null")]
)
def test_parse_non_object(refund: FunctionTool, raw: str, kind: str) -> None:
    err = _arguments_error(refund, raw)
    assert f"must be a JSON object, got {kind}" in err.message


def test_parse_non_text_non_mapping(refund: FunctionTool) -> None:
    assert "got array" in _arguments_error(refund, [("order_id", "o")]).message


def test_parse_wrong_types(refund: FunctionTool) -> None:
    err = _arguments_error(
        refund, {"order_id": 12, "amount": "lots", "currency": "GBP", "lines": [{"sku": "a", "qty": "2", "note": None}]}
    )
    assert err.details == [
        {"loc": "amount", "msg": "expected number, got string"},
        {"loc": "currency", "msg": 'must be one of ["EUR", "USD"]'},
        {"loc": "lines[0].qty", "msg": "expected integer, got string"},
        {"loc": "order_id", "msg": "expected string, got integer"},
    ]
    assert "amount: expected number, got string" in err.message and "refund_payment" in err.message


def test_parse_missing_required(refund: FunctionTool) -> None:
    err = _arguments_error(refund, '{"order_id": "o", "lines": [{"sku": "a"}]}')
    assert {"loc": "amount", "msg": "required property is missing"} in err.details
    assert {"loc": "currency", "msg": "required property is missing"} in err.details
    assert {"loc": "lines[0].qty", "msg": "required property is missing"} in err.details


def test_parse_extra_property(refund: FunctionTool) -> None:
    err = _arguments_error(
        refund,
        {
            "order_id": "o",
            "amount": 1,
            "currency": None,
            "lines": [{"sku": "a", "qty": 1, "note": None, "x": 1}],
            "why": ".",
        },
    )
    assert err.details == [
        {"loc": "lines[0].x", "msg": "unexpected property"},
        {"loc": "why", "msg": "unexpected property: the tool has no parameter of this name"},
    ]


def test_parse_reports_the_union_branch_meant() -> None:
    def adopt(pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")], n: int | None = None) -> None: ...  # noqa: UP007

    tool = function_tool(adopt)
    assert _arguments_error(tool, {"pet": {"kind": "dog", "barks": "x"}, "n": None}).details == [
        {"loc": "pet.barks", "msg": "expected integer, got string"}
    ]
    assert _arguments_error(tool, {"pet": {"kind": "cow"}, "n": "x"}).details == [
        {"loc": "n", "msg": "expected integer or null, got string"},
        {"loc": "pet.kind", "msg": 'must be one of ["cat", "dog"]'},
    ]


def test_parse_enforces_constraints_and_validators_pydantic_side() -> None:
    def pay(memo: Annotated[str, Field(max_length=5)], p: Positive) -> None: ...

    tool = function_tool(pay)
    err = _arguments_error(tool, {"memo": "far too long", "p": {"amount": -3}})
    assert {d["loc"] for d in err.details} == {"memo", "p.amount"}
    assert any("amount must be positive" in d["msg"] for d in err.details)
    assert any("at most 5 characters" in d["msg"] for d in err.details)


def test_empty_arguments_text_means_no_arguments() -> None:
    def ping() -> str:
        return "pong"

    tool = function_tool(ping)
    assert tool.parse_arguments("") == {} and tool.parse_arguments("  ") == {}
    assert "required property is missing" in _arguments_error(function_tool(_refund), "").message


# -------------------------------------------------------------------------------- to_python


def test_to_python_rebuilds_models_enums_and_defaults() -> None:
    default_tags: list[str] = ["x"]

    def act(
        order: Order,
        color: Color,
        to: Address,
        tags: list[str] = default_tags,
        shade: Color = Color.GREEN,
        note: str | None = None,
    ) -> None: ...

    tool = function_tool(act)
    args = tool.parse_arguments(
        {
            "order": {"order_id": "o", "lines": [{"sku": "a", "qty": 2, "note": None}]},
            "color": "red",
            "to": {"street": "Rue", "city": "Lyon"},
            "tags": None,
            "shade": None,
            "note": None,
        }
    )
    kwargs = tool.to_python(args)
    assert kwargs["order"] == Order(order_id="o", lines=[LineItem(sku="a", qty=2)])
    assert isinstance(kwargs["order"].lines[0], LineItem)
    assert kwargs["color"] is Color.RED
    assert kwargs["to"] == Address(street="Rue", city="Lyon") and isinstance(kwargs["to"], Address)
    assert kwargs["tags"] is default_tags  # null -> the Python default itself
    assert kwargs["shade"] is Color.GREEN
    assert kwargs["note"] is None
    explicit = tool.to_python({**args, "tags": ["y"], "shade": "red", "note": "hi"})
    assert explicit["tags"] == ["y"] and explicit["shade"] is Color.RED and explicit["note"] == "hi"
    missing = tool.to_python({k: v for k, v in args.items() if k not in ("tags", "shade")})
    assert missing["tags"] is default_tags and missing["shade"] is Color.GREEN


def test_to_python_rejects_unvalidated_arguments(refund: FunctionTool) -> None:
    with pytest.raises(ToolArgumentsError) as info:
        refund.to_python({"order_id": "o", "amount": "much"})
    assert info.value.details[0]["loc"] == "amount"


def test_invoke_sync(refund: FunctionTool) -> None:
    args = refund.parse_arguments('{"order_id": "o", "amount": 5, "currency": null, "lines": null}')
    assert refund.invoke(args) == {"order_id": "o", "amount": 5.0, "currency": "EUR", "lines": None}


# ----------------------------------------------------------------------------------- async


async def _async_refund(order_id: str) -> str:
    return f"async {order_id}"


class _AsyncCallable:
    async def __call__(self, order_id: str) -> str:
        return f"callable {order_id}"


def test_async_detection_and_invoke() -> None:
    tool = function_tool(_async_refund)
    assert tool.is_async is True
    assert function_tool(_refund).is_async is False
    assert function_tool(functools.partial(_async_refund), name="partial_refund").is_async is True
    instance_tool = function_tool(_AsyncCallable(), name="callable_refund")
    assert instance_tool.is_async is True
    coroutine = tool.invoke({"order_id": "o"})
    assert asyncio.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == "async o"
    assert asyncio.run(instance_tool.invoke({"order_id": "c"})) == "callable c"


# ----------------------------------------------------------------------------------- value()


def test_value_and_target(refund: FunctionTool) -> None:
    args = {"order_id": "o", "amount": 199, "currency": None, "lines": None}
    assert refund.value(args) == 199.0 and isinstance(refund.value(args), float)
    assert function_tool(_refund).value(args) is None  # nothing at stake
    assert function_tool(_refund, value_from_args=lambda a: None).value(args) is None
    assert function_tool(_refund, value_from_args=lambda a: decimal.Decimal("1.5")).value(args) == 1.5
    tool = function_tool(_refund, target_from_args=lambda a: a["order_id"])
    assert tool.target(args) == "o" and function_tool(_refund).target(args) is None


@pytest.mark.parametrize(
    ("hook", "words"),
    [
        (lambda a: a["missing"], "KeyError"),
        (lambda a: "199", "must return a number"),
        (lambda a: True, "must return a number"),
        (lambda a: float("nan"), "not a finite number"),
    ],
)
def test_value_hook_failures_raise_value_error(hook: Any, words: str) -> None:
    tool = function_tool(_refund, name="refund_payment", value_from_args=hook)
    with pytest.raises(ValueError, match=words) as info:
        tool.value({"order_id": "o", "amount": 1})
    assert "refund_payment" in str(info.value)


def test_target_hook_must_return_text() -> None:
    with pytest.raises(ValueError, match="string or None"):
        function_tool(_refund, target_from_args=lambda a: 42).target({"order_id": "o"})


# ------------------------------------------------------------------------------ wire shapes


def test_responses_and_chat_spec_shapes(refund: FunctionTool) -> None:
    spec = refund.responses_spec()
    assert spec == {
        "type": "function",
        "name": "refund_payment",
        "description": "",
        "parameters": refund.parameters,
        "strict": True,
    }
    chat = refund.chat_spec()
    assert chat == {
        "type": "function",
        "function": {"name": "refund_payment", "description": "", "parameters": refund.parameters, "strict": True},
    }
    spec["parameters"]["properties"].clear()  # callers get copies
    chat["function"]["parameters"]["required"].clear()
    assert refund.parameters["properties"] and refund.parameters["required"]


def test_tool_is_frozen_and_keeps_its_own_schema() -> None:
    schema = _object({"order_id": {"type": "string"}})
    tool = FunctionTool(name="direct", description="d", parameters=schema, fn=lambda order_id: order_id)
    schema["properties"]["order_id"]["type"] = "integer"
    assert tool.parameters["properties"]["order_id"] == {"type": "string"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        tool.name = "other"  # type: ignore[misc]
    assert tool.invoke(tool.parse_arguments('{"order_id": "x"}')) == "x"
    with pytest.raises(ToolDefinitionError, match="additionalProperties"):
        FunctionTool(name="direct", description="", parameters={"type": "object", "properties": {}}, fn=print)


def test_decorator_form() -> None:
    @function_tool(name="greet", value_from_args=lambda a: 1)
    def hello(who: str) -> str:
        """Say hello."""
        return f"hello {who}"

    assert isinstance(hello, FunctionTool) and hello.name == "greet" and hello.description == "Say hello."
    assert hello.invoke({"who": "ann"}) == "hello ann"


# ------------------------------------------------------------------------- parameters_schema


_GOOD_SCHEMA = _object({"order_id": {"type": "string", "pattern": "^ord_"}, "amount": {"type": "number", "minimum": 0}})


def test_parameters_schema_used_as_is() -> None:
    tool = function_tool(_refund, parameters_schema=_GOOD_SCHEMA, value_from_args=lambda a: a["amount"])
    assert tool.parameters == _GOOD_SCHEMA
    args = tool.parse_arguments('{"order_id": "ord_1", "amount": 5}')
    assert tool.to_python(args) == {"order_id": "ord_1", "amount": 5}
    assert tool.invoke(args)["currency"] == "EUR"
    err = _arguments_error(tool, '{"order_id": "x1", "amount": -1, "extra": 1}')
    assert err.details == [
        {"loc": "amount", "msg": "-1 is less than the minimum of 0"},
        {"loc": "extra", "msg": "unexpected property: the tool has no parameter of this name"},
        {"loc": "order_id", "msg": "'x1' does not match '^ord_'"},
    ]


def test_parameters_schema_strict_violations_say_what_to_fix() -> None:
    loose = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "minLength": 1}, "amount": {"type": "number", "default": 1}},
        "required": ["order_id", "amount"],
    }
    err = _rejected(_refund, parameters_schema=loose)
    text = str(err)
    assert "'_refund'" in text and "strict" in text
    assert "additionalProperties" in text and "'default'" in text and "'minLength'" in text
    assert function_tool(_refund, parameters_schema=loose, strict=False).strict is False


def test_parameters_schema_shape_checks() -> None:
    assert "JSON object schema" in str(
        _rejected(_refund, parameters_schema={"type": "array", "items": {"type": "string"}})
    )
    bad = _object({"order_id": {"type": "strng"}, "amount": {"type": "number"}})
    assert "not a valid JSON schema" in str(_rejected(_refund, parameters_schema=bad))
    unknown = _object({"order_id": {"type": "string"}, "amount": {"type": "number"}, "zzz": {"type": "string"}})
    assert "'zzz'" in str(_rejected(_refund, parameters_schema=unknown))
    partial = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
    assert "'amount'" in str(_rejected(_refund, parameters_schema=partial, strict=False))


def test_strict_false_generated_schema_allows_free_form_and_optional() -> None:
    def tag(meta: dict[str, Any], limit: int = 3) -> None: ...

    tool = function_tool(tag, strict=False)
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "meta": {"type": "object", "additionalProperties": True},
            "limit": {"type": "integer", "default": 3},
        },
        "required": ["meta"],
        "additionalProperties": False,
    }
    assert tool.responses_spec()["strict"] is False
    assert tool.to_python(tool.parse_arguments('{"meta": {"a": 1}}')) == {"meta": {"a": 1}, "limit": 3}


def test_strict_schema_problems() -> None:
    assert strict_schema_problems(_GOOD_SCHEMA) == []
    assert any("root" in p for p in strict_schema_problems({"anyOf": [_GOOD_SCHEMA]}))
    assert any("$ref must stand alone" in p for p in strict_schema_problems(
        _object({"a": {"$ref": "#/$defs/A", "description": "x"}}, **{"$defs": {"A": {"type": "string"}}})
    ))  # fmt: skip
    assert any("does not point" in p for p in strict_schema_problems(_object({"a": {"$ref": "#/$defs/Nope"}})))
    assert any("'items'" in p for p in strict_schema_problems(_object({"a": {"type": "array"}})))
    assert any("format" in p for p in strict_schema_problems(_object({"a": {"type": "string", "format": "uri"}})))
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(11):
        deep = _object({"x": deep})
    assert any("nested more than 10" in p for p in strict_schema_problems(deep))


# -------------------------------------------------------------- against OpenAI's own spec


def _spec_tools() -> list[FunctionTool]:
    def act(order: Order, color: Color, to: Address, tags: list[str] | None = None, limit: int = 10) -> None:
        """Act on an order.

        Args:
            order: The order.
        """

    def adopt(tree: Node, pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]) -> None: ...  # noqa: UP007

    def ping() -> None: ...

    def tag(meta: dict[str, Any]) -> None: ...

    return [
        function_tool(_refund),
        function_tool(act),
        function_tool(adopt),
        function_tool(ping),
        function_tool(_google, name="refund-google"),
        function_tool(tag, strict=False),
        function_tool(_refund, parameters_schema=_GOOD_SCHEMA),
    ]


def test_every_spec_validates_against_openai_openapi() -> None:
    from openai_spec import assert_valid

    for tool in _spec_tools():
        assert_valid("FunctionTool", tool.responses_spec())
        assert_valid("ChatCompletionTool", tool.chat_spec())
        assert_valid("FunctionParameters", tool.parameters)
        if tool.strict:
            assert strict_schema_problems(tool.parameters) == []
