"""`when:` conditions in CEL, compiled once when rules load.

CEL is sandboxed by construction (no I/O, no attribute access on Python objects, guaranteed
termination), and the compiled Rust implementation keeps evaluation to microseconds. We still
check at load time that an expression only names variables and functions that exist, because
the library would otherwise report them only when a call arrives, which is too late.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clearance.errors import RuleError

#: The names an expression may use; ``evaluation_context`` supplies exactly these.
VARIABLES = frozenset({"tool", "args", "actor", "domain", "value", "target", "context", "now"})

#: CEL standard functions supported by the runtime (tests execute each one). ``bool``, ``max``
#: and ``min`` are absent on purpose: the runtime compiles them but fails on every call.
FUNCTIONS = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches",
        "int", "uint", "double", "string", "bytes", "dyn", "type",
        "timestamp", "duration",
        "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear",
        "getHours", "getMilliseconds", "getMinutes", "getMonth", "getSeconds",
    }
)  # fmt: skip

#: Type denotations (``type(x) == string``), which the library reports as variables.
TYPE_NAMES = frozenset({"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"})

_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")
#: Variables bound by the comprehension macros (``args.items.all(i, i.qty > 0)``), which the
#: library reports as free variables.
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
#: Timestamp accessors given a time zone (``now.getHours("Europe/Berlin")``): the runtime
#: compiles them but cannot run them.
_ZONED_ACCESSOR = re.compile(
    r"\.\s*(getDate|getDayOfMonth|getDayOfWeek|getDayOfYear|getFullYear|getHours|getMilliseconds|getMinutes|"
    r"getMonth|getSeconds)\s*\(\s*[^\s)]"
)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Condition:
    source: str
    program: Any
    #: The variables the expression may read: every one of :data:`VARIABLES` whose name occurs
    #: in the source (a superset of what it reads). Only these are handed to the runtime, which
    #: converts each variable to a CEL value on every call, used or not.
    names: tuple[str, ...] = tuple(sorted(VARIABLES))

    def evaluate(self, variables: dict[str, Any]) -> bool:
        """True when the condition holds; raises when it cannot be decided.

        A non-boolean result is an error rather than truthiness, so that `args.amount` written
        by mistake for `args.amount > 0` does not quietly decide calls.
        """
        result = self.program.execute({name: variables[name] for name in self.names if name in variables})
        if not isinstance(result, bool):
            raise TypeError(f"condition returned {type(result).__name__}, not a boolean")
        return result


def compile_condition(source: str, rule_id: str) -> Condition:
    import cel  # here, not at module top: importing it costs ~0.2 s that rules without `when` never need

    where = f"rule {rule_id!r}, when"
    try:
        program = cel.compile(source)
    except ValueError as exc:
        match = _POSITION.search(str(exc))
        if match:
            line, col, message = match.groups()
            raise RuleError(f"{where}: {message} at line {line}, column {col}: {source!r}") from None
        raise RuleError(f"{where}: {exc}") from None
    bound = set(_BOUND.findall(source))
    unknown_vars = sorted(set(program.variables()) - VARIABLES - TYPE_NAMES - bound)
    if unknown_vars:
        raise RuleError(
            f"{where}: unknown variable {', '.join(unknown_vars)} in {source!r}; "
            f"available: {', '.join(sorted(VARIABLES))}"
        )
    unknown_fns = sorted(
        f for f in program.functions() if f not in FUNCTIONS and not f.startswith(("_", "!", "@"))
    )
    if unknown_fns:
        raise RuleError(f"{where}: unknown function {', '.join(unknown_fns)} in {source!r}")
    if zoned := _ZONED_ACCESSOR.search(source):
        raise RuleError(
            f"{where}: {zoned.group(1)}() with a time zone argument is not supported in {source!r}; "
            "timestamps are in UTC, use allowed_hours with tz for local time"
        )
    names = tuple(sorted(VARIABLES.intersection(_WORD.findall(source), program.variables())))
    return Condition(source=source, program=program, names=names)
