"""Validate JSON against OpenAI's published OpenAPI spec (test helper).

The spec is the vendored copy in ``shared/openai-openapi/`` beside the repository
(``openapi.yaml``; the ``openapi.json`` published with it is read instead when present,
because parsing 3 MB of JSON is ~30x faster than YAML).

    from openai_spec import assert_valid, validator

    assert_valid("Response", body)               # AssertionError listing every error
    validator("CreateResponse").is_valid(body)   # jsonschema Draft 2020-12 validator

Schemas are ``components.schemas`` keys (``Response``, ``CreateResponse``,
``ErrorResponse``, ``OutputItem``, ...). ``$ref``s resolve against the whole spec
through a ``referencing`` registry. OpenAPI 3.1 schemas are JSON Schema 2020-12;
``discriminator`` and ``x-*`` keywords are annotations and are not enforced, and
formats (``unixtime``) are not checked. ``oneOf`` is checked as "at least one branch"
by default, because some of the spec's union branches overlap (pass
``strict_one_of=True`` for the exact rule).

The spec is OpenAPI 3.1 but still marks some fields with 3.0's ``nullable: true`` (e.g.
``finish_reason``, ``logprobs`` and ``usage`` of ``CreateChatCompletionStreamResponse``),
which JSON Schema ignores, so ``null`` there would fail; pass ``nullable=True`` to let
``null`` through wherever a schema says ``nullable: true``.

If the spec is missing, callers are skipped with a clear reason, except when the
``CI`` environment variable is set: then they fail, so CI never passes by skipping.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "assert_valid", "load_spec", "schema_names", "validator"]

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml"
_SPEC_URI = "urn:openai-openapi"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any] | None:
    json_path = SPEC_PATH.with_suffix(".json")
    if json_path.is_file():
        with json_path.open("rb") as f:
            return json.load(f)
    if SPEC_PATH.is_file():
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with SPEC_PATH.open("rb") as f:
            return yaml.load(f, Loader=loader)  # noqa: S506 - safe loader
    return None


def load_spec() -> dict[str, Any]:
    """The parsed spec (cached); skips (or fails under CI) when it is absent."""
    spec = _load()
    if spec is None:
        _missing(f"OpenAI OpenAPI spec not found at {SPEC_PATH}")
    assert spec is not None
    return spec


def schema_names() -> list[str]:
    return sorted(load_spec()["components"]["schemas"])


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


def _one_of_as_any_of(validator: Any, one_of: Any, instance: Any, schema: Any) -> Any:
    errors = []
    for index, subschema in enumerate(one_of):
        branch = list(validator.descend(instance, subschema, schema_path=index))
        if not branch:
            return
        errors.extend(branch)
    yield ValidationError(f"{instance!r} is not valid under any of the given schemas", context=errors)


# The spec's unions are oneOf, but some branches overlap (e.g. an input message
# {"role": "user", "content": [...]} is both an EasyInputMessage and an input Message), so
# strict oneOf rejects bodies OpenAI and its SDK accept. By default a oneOf passes when at
# least one branch matches, like the SDK's unions; strict_one_of=True restores the rule.
_LenientValidator = validators.extend(Draft202012Validator, {"oneOf": _one_of_as_any_of})


def _honour_nullable(cls: Any) -> Any:
    """``cls`` extended so that ``null`` satisfies every keyword of a ``nullable: true`` schema."""

    def wrap(check: Any) -> Any:
        def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
            if instance is None and isinstance(schema, dict) and schema.get("nullable") is True:
                return
            yield from check(validator, value, instance, schema) or ()

        return checked

    return validators.extend(cls, {name: wrap(check) for name, check in cls.VALIDATORS.items()})


_NullableValidator = _honour_nullable(Draft202012Validator)
_LenientNullableValidator = _honour_nullable(_LenientValidator)


@functools.lru_cache(maxsize=None)
def _validator(schema_name: str, strict_one_of: bool, nullable: bool = False) -> Draft202012Validator:
    schemas = load_spec()["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in components.schemas of {SPEC_PATH.name}")
    ref = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}
    if nullable:
        cls = _NullableValidator if strict_one_of else _LenientNullableValidator
    else:
        cls = Draft202012Validator if strict_one_of else _LenientValidator
    return cls(ref, registry=_registry())


def validator(schema_name: str, *, strict_one_of: bool = False, nullable: bool = False) -> Draft202012Validator:
    """A Draft 2020-12 validator for ``components.schemas[schema_name]`` (cached).

    ``oneOf`` passes when at least one branch matches unless ``strict_one_of`` is true
    (the spec's unions overlap in places; see ``_LenientValidator``). ``nullable=True``
    accepts ``null`` where a schema says ``nullable: true`` (OpenAPI 3.0's keyword).
    """
    load_spec()  # skip/fail first if the spec is absent
    return _validator(schema_name, strict_one_of, nullable)


def _best_branch(error: Any) -> list[Any]:
    """For a failed oneOf/anyOf, the sub-errors of the branch that fits best.

    Branches whose ``type`` property (the discriminator) does not match are skipped, so a
    bad ``function_call`` item reports what is wrong with it, not with every other item kind.
    """
    groups: dict[Any, list[Any]] = {}
    for sub in error.context or ():
        key = sub.relative_schema_path[0] if sub.relative_schema_path else None
        groups.setdefault(key, []).append(sub)

    def mismatched(e: Any) -> bool:
        path = list(e.relative_path)
        # the instance is not even the branch's JSON type, or its discriminator differs
        return (e.validator == "type" and not path) or (path == ["type"] and e.validator in ("enum", "const"))

    candidates = [errs for errs in groups.values() if not any(mismatched(e) for e in errs)]
    if not candidates:
        best = best_match(error.context or ())
        return [best] if best is not None else []
    return min(candidates, key=len)


def _describe(error: Any, depth: int = 0) -> list[str]:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    lines = [f"{'  ' * depth}- at {where}: {message}"]
    if error.context and depth < 3:
        for sub in _best_branch(error):
            lines.extend(_describe(sub, depth + 1))
    return lines


def assert_valid(schema_name: str, instance: Any, *, strict_one_of: bool = False, nullable: bool = False) -> None:
    """Raise AssertionError listing every validation error of ``instance``."""
    v = validator(schema_name, strict_one_of=strict_one_of, nullable=nullable)
    errors = sorted(v.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        detail = "\n".join(line for e in errors for line in _describe(e))
        raise AssertionError(f"{len(errors)} error(s) validating against {schema_name}:\n{detail}")
