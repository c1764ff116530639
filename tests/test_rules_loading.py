"""Loading rules: validation errors, atomic application, versions, the JSON schema, CEL.

A bad rules file must fail whole, with a message that names the rule and the field (or the
line and column), and through ``Engine.apply_rules`` it must change nothing at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema  # in the `test` extra
import pytest
import yaml

from clearance.engine.core import Engine
from clearance.errors import RuleError
from clearance.model import Action
from clearance.policy import Rule, RuleFile, load_rules, parse_rules, rules_json_schema
from clearance.policy.conditions import FUNCTIONS, compile_condition
from clearance.policy.evaluate import evaluation_context

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rules.yaml"
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=timezone.utc)  # a Monday


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


GOOD = """\
version: 1
rules:
  - id: refunds
    tool: refund_payment
    max_value: 2000
  - id: emails
    tool: send_email
    max_per_day: 3
"""


def _rule(body: str, rid: str = "r1") -> str:
    """A one-rule document; ``body`` is the rule's fields, one per line, unindented."""
    fields = "".join(f"    {line}\n" for line in body.splitlines())
    return f"version: 1\nrules:\n  - id: {rid}\n{fields}"


# (case id, document, fragments the message must contain)
BAD_FILES = [
    ("yaml-indent", "version: 1\nrules:\n  - id: r1\n   tool: x\n", ["invalid YAML", "line 4", "column 4"]),
    ("yaml-unclosed", "version: 1\nrules: [\n", ["invalid YAML", "line 3", "column 1"]),
    ("unknown-top-level", "version: 1\nbogus: true\nrules: []\n", ["unknown field 'bogus'"]),
    ("unknown-rule-field", _rule("tool: x\nmaxvalue: 10", rid="refunds-eu"), ["rule 'refunds-eu'", "unknown field 'maxvalue'"]),
    ("negative-max_value", _rule("max_value: -1"), ["rule 'r1'", "max_value", "greater than or equal to 0"]),
    ("negative-max_per_hour", _rule("max_per_hour: -5"), ["rule 'r1'", "max_per_hour"]),
    ("negative-budget", _rule("budget: -0.01"), ["rule 'r1'", "budget"]),
    ("negative-cooldown", _rule("cooldown_seconds: -1"), ["rule 'r1'", "cooldown_seconds"]),
    ("cel-syntax", _rule("when: 'value > 1 &&'"), ["rule 'r1'", "when", "Syntax error", "line 1, column 13"]),
    ("cel-syntax-multiline", _rule("when: |\n  value > 1 &&\n  actor == "), ["rule 'r1'", "line 3, column 1"]),
    ("cel-unknown-variable", _rule("when: 'amount > 100'"), ["rule 'r1'", "unknown variable amount"]),
    ("cel-unknown-function", _rule("when: 'lookup(actor) > 1'"), ["rule 'r1'", "unknown function lookup"]),
    ("cel-bool-fn", _rule("when: 'bool(\"true\")'"), ["rule 'r1'", "unknown function bool"]),
    ("cel-max-fn", _rule("when: 'max(value, 1.0) > 5.0'"), ["rule 'r1'", "unknown function max"]),
    ("cel-zoned-accessor", _rule("when: 'now.getHours(\"Europe/Berlin\") < 9'"), ["rule 'r1'", "getHours", "time zone"]),
    ("cel-unbound-in-macro", _rule("when: 'args.items.all(i, j > 0)'"), ["rule 'r1'", "unknown variable j"]),
    ("bad-tz", _rule("allowed_hours: {start: 9, end: 17, tz: Mars/Olympus_Mons}"), ["rule 'r1'", "tz", "Mars/Olympus_Mons"]),
    ("hours-equal", _rule("allowed_hours: {start: 9, end: 9}"), ["rule 'r1'", "allowed_hours", "equal"]),
    ("hours-equal-mixed", _rule("allowed_hours: {start: 9, end: '09:00'}"), ["rule 'r1'", "equal"]),
    ("hours-out-of-range", _rule("allowed_hours: {start: 25, end: 6}"), ["rule 'r1'", "allowed_hours.start"]),
    ("bad-day", _rule("allowed_hours: {start: 9, end: 17, days: [funday]}"), ["rule 'r1'", "days"]),
    ("duplicate-ids", "version: 1\nrules:\n  - id: dup\n    max_value: 1\n  - id: dup\n    max_value: 2\n", ["'dup'", "more than once"]),
    ("min-above-max", _rule("min_value: 10\nmax_value: 5"), ["rule 'r1'", "min_value 10 is above max_value 5"]),
    ("effect-with-limits", _rule("max_value: 10\neffect: block"), ["rule 'r1'", "effect", "limits"]),
    ("bad-effect", _rule("effect: allow"), ["rule 'r1'", "effect"]),
    ("bad-status", _rule("status: off\nmax_value: 1"), ["rule 'r1'", "status"]),
    ("ttl-text", _rule("approval_ttl: soon\nrequire_approval_above: 1"), ["rule 'r1'", "approval_ttl", "soon"]),
    ("ttl-zero", _rule("approval_ttl: 0\nrequire_approval_above: 1"), ["rule 'r1'", "approval_ttl", "positive"]),
    ("ttl-negative", _rule("approval_ttl: -60\nrequire_approval_above: 1"), ["rule 'r1'", "approval_ttl"]),
    ("ttl-bool", _rule("approval_ttl: true\nrequire_approval_above: 1"), ["rule 'r1'", "approval_ttl"]),
    ("approvals-required-0", _rule("approvals_required: 0\nrequire_approval_above: 1"), ["rule 'r1'", "approvals_required"]),
    ("approvals-required-11", _rule("approvals_required: 11\nrequire_approval_above: 1"), ["rule 'r1'", "approvals_required"]),
    ("bad-id", "version: 1\nrules:\n  - id: 'has space'\n    max_value: 1\n", ["rules[0].id"]),
    ("file-version", "version: 2\nrules: []\n", ["version"]),
    ("not-a-mapping", "- id: r1\n  max_value: 1\n", ["expected a mapping"]),
]


def _assert_mentions(message: str, fragments: list[str]) -> None:
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error message {message!r}"


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_parse_rules_rejects_with_a_clear_message(text: str, fragments: list[str]) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(text)
    _assert_mentions(str(info.value), fragments)


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in BAD_FILES[:4]], ids=[c[0] for c in BAD_FILES[:4]])
def test_load_rules_names_the_file(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "bad-rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules(path)
    assert "bad-rules.yaml" in str(info.value)
    _assert_mentions(str(info.value), fragments)


def test_load_rules_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read rules file"):
        load_rules(tmp_path / "nope.yaml")


def test_rule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_rules(_rule("max_value: -1"))


def test_empty_document_is_an_empty_rule_file() -> None:
    assert parse_rules("").rules == []
    assert parse_rules("version: 1\n").rules == []


def test_good_file_parses() -> None:
    rf = parse_rules(GOOD)
    assert [r.id for r in rf.rules] == ["refunds", "emails"]
    assert rf.rules[0].max_value == 2000


def test_durations_and_single_actor_strings_parse() -> None:
    rf = parse_rules(_rule("require_approval_above: 1\napproval_ttl: 1h30m\nactors: agent-1\ndeny_actors: bad-*"))
    rule = rf.rules[0]
    assert rule.approval_ttl is not None and rule.approval_ttl.total_seconds() == 5400
    assert rule.actors == ["agent-1"]
    assert rule.deny_actors == ["bad-*"]
    assert parse_rules(_rule("require_approval_above: 1\napproval_ttl: 90")).rules[0].approval_ttl.total_seconds() == 90  # type: ignore[union-attr]
    assert parse_rules(_rule("require_approval_above: 1\napproval_ttl: 2d")).rules[0].approval_ttl.total_seconds() == 172800  # type: ignore[union-attr]


# -- through the engine: a bad file changes nothing -----------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, clock: Clock):
    eng = Engine(tmp_path / "x.db", clock=lambda: clock.now)
    yield eng
    eng.close()


def _write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_apply_bad_file_changes_nothing(engine: Engine, tmp_path: Path, text: str, fragments: list[str]) -> None:
    first = engine.apply_rules(_write(tmp_path, GOOD, "good.yaml"), applied_by="ops")
    assert first.version == 1
    versions_before = engine.policy_versions()
    events_before = engine.audit_events(limit=1000)

    with pytest.raises(RuleError) as info:
        engine.apply_rules(_write(tmp_path, text, "bad.yaml"), applied_by="ops")
    _assert_mentions(str(info.value), fragments)

    assert engine.policy_versions() == versions_before
    assert engine.audit_events(limit=1000) == events_before
    # The old policy still decides.
    decision = engine.evaluate({"tool": "refund_payment", "value": 5000})
    assert decision.policy_version == "1"
    assert [m.rule_id for m in decision.matched_rules] == ["refunds"]


def test_apply_rulefile_object_with_bad_condition_changes_nothing(engine: Engine) -> None:
    engine.apply_rules(parse_rules(GOOD))
    versions_before, events_before = engine.policy_versions(), engine.audit_events(limit=1000)
    # Constructing a RuleFile does not compile CEL; applying it must.
    bad = RuleFile(rules=[Rule(id="broken", when="value >")])
    with pytest.raises(RuleError, match=r"rule 'broken'.*line 1, column"):
        engine.apply_rules(bad)
    assert engine.policy_versions() == versions_before
    assert engine.audit_events(limit=1000) == events_before


def test_engine_with_pinned_bad_rules_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="unknown variable"):
        Engine(tmp_path / "x.db", rules=RuleFile(rules=[Rule(id="r", when="amount > 1")]))
    with pytest.raises(RuleError, match="invalid YAML"):
        Engine(tmp_path / "y.db", rules=_write(tmp_path, "rules: [\n"))


def test_apply_records_version_and_audit_event(engine: Engine, tmp_path: Path) -> None:
    info = engine.apply_rules(_write(tmp_path, GOOD), applied_by="alice")
    assert (info.version, info.added, info.changed, info.removed, info.unchanged) == (1, ["refunds", "emails"], [], [], False)
    versions = engine.policy_versions()
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["applied_by"] == "alice"
    applied = engine.audit_events(type="rules.applied")
    assert len(applied) == 1
    assert applied[0].payload["policy_version"] == "1"
    assert applied[0].payload["added"] == ["refunds", "emails"]
    assert engine.verify_audit().ok


def test_apply_same_file_twice_is_unchanged(engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    engine.apply_rules(path)
    events = engine.audit_events(limit=1000)
    again = engine.apply_rules(path)
    assert again.unchanged is True
    assert again.version == 1
    assert (again.added, again.changed, again.removed) == ([], [], [])
    assert [v["version"] for v in engine.policy_versions()] == [1]
    assert engine.audit_events(limit=1000) == events


def test_comments_and_formatting_do_not_make_a_new_version(engine: Engine, tmp_path: Path) -> None:
    engine.apply_rules(_write(tmp_path, GOOD))
    reformatted = "# our rules\nversion: 1\nrules:\n  - {id: refunds, tool: refund_payment, max_value: 2000.0}\n" \
                  "  - id: emails   # rate\n    max_per_day: 3\n    tool: send_email\n"  # fmt: skip
    assert engine.apply_rules(_write(tmp_path, reformatted, "r2.yaml")).unchanged is True


def test_editing_one_rule_bumps_only_its_version(engine: Engine, tmp_path: Path) -> None:
    engine.apply_rules(_write(tmp_path, GOOD))
    d1 = engine.evaluate({"tool": "refund_payment", "value": 5000})
    assert [(m.rule_id, m.rule_version) for m in d1.matched_rules] == [("refunds", 1)]
    assert d1.policy_version == "1"

    edited = GOOD.replace("max_value: 2000", "max_value: 3000")
    info = engine.apply_rules(_write(tmp_path, edited, "v2.yaml"))
    assert (info.version, info.added, info.changed, info.removed) == (2, [], ["refunds"], [])
    d2 = engine.evaluate({"tool": "refund_payment", "value": 5000})
    assert d2.policy_version == "2"
    assert [(m.rule_id, m.rule_version) for m in d2.matched_rules] == [("refunds", 2)]
    assert "max_value 3,000" in d2.reason

    # The untouched rule keeps version 1: make it fire to see its version.
    sends = [engine.evaluate({"tool": "send_email", "actor": "a"}) for _ in range(3)]
    assert all(s.allowed for s in sends)
    over = engine.evaluate({"tool": "send_email", "actor": "a"})
    assert [(m.rule_id, m.rule_version) for m in over.matched_rules] == [("emails", 1)]


def test_removed_rule_that_returns_continues_its_count(engine: Engine, tmp_path: Path) -> None:
    engine.apply_rules(_write(tmp_path, GOOD))
    only_emails = "version: 1\nrules:\n  - id: emails\n    tool: send_email\n    max_per_day: 3\n"
    info = engine.apply_rules(_write(tmp_path, only_emails, "v2.yaml"))
    assert info.removed == ["refunds"]
    assert engine.evaluate({"tool": "refund_payment", "value": 5000}).allowed
    back = GOOD.replace("max_value: 2000", "max_value: 1000")
    info = engine.apply_rules(_write(tmp_path, back, "v3.yaml"))
    assert info.added == ["refunds"] and info.version == 3
    d = engine.evaluate({"tool": "refund_payment", "value": 5000})
    assert [(m.rule_id, m.rule_version) for m in d.matched_rules] == [("refunds", 2)]


def test_applied_policy_with_approval_ttl_round_trips(engine: Engine, clock: Clock) -> None:
    """A stored policy is read back from its JSON dump; durations must survive that."""
    engine.apply_rules(parse_rules(_rule("tool: pay\nrequire_approval_above: 10\napproval_ttl: 2h", rid="pay")))
    d = engine.evaluate({"tool": "pay", "value": 50, "actor": "agent"})
    assert d.requires_approval
    assert d.approval_expires_at == clock.now + timedelta(hours=2)


# -- the JSON schema ------------------------------------------------------------------------


def _validator():
    schema = rules_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_schema_validates_the_example_file() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    errors = [e.message for e in _validator().iter_errors(data)]
    assert errors == []
    # And the example loads for real.
    assert [r.id for r in load_rules(EXAMPLE).rules] == ["refunds-eu", "no-foreign-currency", "deploys-office-hours", "emails-rate"]


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 1, "rules": [{"id": "r", "bogus": 1}]},
        {"version": 1, "extra": True, "rules": []},
        {"version": 1, "rules": [{"id": "r", "max_value": -1}]},
        {"version": 1, "rules": [{"id": "r", "effect": "allow"}]},
        {"version": 1, "rules": [{"id": "r", "allowed_hours": {"start": 9, "end": 17, "days": ["funday"]}}]},
        {"version": 1, "rules": [{"max_value": 1}]},
        {"version": 2, "rules": []},
    ],
)
def test_schema_rejects_what_the_loader_rejects(doc: dict) -> None:
    assert list(_validator().iter_errors(doc)), f"schema accepted {doc}"
    with pytest.raises(RuleError):
        parse_rules(yaml.safe_dump(doc))


@pytest.mark.parametrize("ttl", ["24h", "1h30m", 3600])
def test_schema_accepts_the_duration_spellings_the_loader_accepts(ttl: object) -> None:
    doc = {"version": 1, "rules": [{"id": "r", "require_approval_above": 1, "approval_ttl": ttl}]}
    parse_rules(yaml.safe_dump(doc))
    assert [e.message for e in _validator().iter_errors(doc)] == []


# -- CEL: the curated function list works at runtime ----------------------------------------

NOW = datetime(2024, 3, 31, 1, 30, 15, 250000, tzinfo=timezone.utc)  # a Sunday
ACTION = Action(
    tool="refund_payment",
    arguments={"amount": 5, "note": "hello", "items": [{"sku": "a", "qty": 2}]},
    actor="agent-7",
    domain="payments",
    value=5.0,
    context={"tier": "gold"},
)

#: One expression per curated function; each must evaluate to True on ACTION at NOW.
FUNCTION_PROBES = {
    "size": 'size(args.note) == 5 && args.items.size() == 1',
    "contains": 'args.note.contains("ell")',
    "startsWith": 'actor.startsWith("agent-")',
    "endsWith": 'tool.endsWith("_payment")',
    "matches": 'actor.matches("^agent-[0-9]+$")',
    "int": 'int(value) == 5',
    "uint": 'uint(args.amount) == 5u',
    "double": 'double(args.amount) == value',
    "string": 'string(args.amount) == "5"',
    "bytes": 'bytes(args.note) == b"hello"',
    "dyn": 'dyn(args.amount) == 5',
    "type": 'type(args.note) == string && type(value) == double',
    "timestamp": 'timestamp("2024-03-31T01:30:15.250Z") == now',
    "duration": 'now - duration("1h") < now && duration("90m") == duration("1h30m")',
    "getDate": 'now.getDate() == 31',
    "getDayOfMonth": 'now.getDayOfMonth() == 30',
    "getDayOfWeek": 'now.getDayOfWeek() == 0',
    "getDayOfYear": 'now.getDayOfYear() == 90',
    "getFullYear": 'now.getFullYear() == 2024',
    "getHours": 'now.getHours() == 1',
    "getMilliseconds": 'now.getMilliseconds() == 250',
    "getMinutes": 'now.getMinutes() == 30',
    "getMonth": 'now.getMonth() == 2',
    "getSeconds": 'now.getSeconds() == 15',
}


def test_every_curated_function_has_a_probe() -> None:
    assert set(FUNCTION_PROBES) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTION_PROBES))
def test_curated_function_works_at_runtime(name: str) -> None:
    condition = compile_condition(FUNCTION_PROBES[name], "probe")
    assert condition.evaluate(evaluation_context(ACTION, NOW)) is True
    # The probe must be able to fail: negate it.
    negated = compile_condition(f"!({FUNCTION_PROBES[name]})", "probe")
    assert negated.evaluate(evaluation_context(ACTION, NOW)) is False


@pytest.mark.parametrize(
    "source",
    [
        'args.items.all(i, i.qty > 0)',
        'args.items.exists(i, i.sku == "a")',
        'args.items.exists_one(i, i.sku == "a")',
        'args.items.map(i, i.qty).exists(q, q == 2)',
        'size(args.items.filter(i, i.qty > 1)) == 1',
        'has(args.amount) && !has(args.currency)',
        '"tier" in context && context.tier == "gold"',
        'target == null',
        'domain == "payments" ? value < 10.0 : false',
    ],
)
def test_standard_cel_forms_load_and_run(source: str) -> None:
    rf = parse_rules(yaml.safe_dump({"version": 1, "rules": [{"id": "r", "when": source}]}))
    assert rf.rules[0].when == source
    assert compile_condition(source, "r").evaluate(evaluation_context(ACTION, NOW)) is True


def test_evaluation_context_handles_non_utc_clocks() -> None:
    from zoneinfo import ZoneInfo

    berlin = NOW.astimezone(ZoneInfo("Europe/Berlin"))  # 03:30 local, 01:30 UTC
    condition = compile_condition("now.getHours() == 1", "r")
    assert condition.evaluate(evaluation_context(ACTION, berlin)) is True


def test_missing_value_is_zero_in_conditions() -> None:
    ctx = evaluation_context(Action(tool="t"), NOW)
    assert ctx["value"] == 0.0
    assert compile_condition("value > 100.0", "r").evaluate(ctx) is False


@pytest.mark.parametrize("field", ["actors", "allow_actors", "deny_actors"])
@pytest.mark.parametrize("names", ["agent-1", ["agent-*", "bot-?"]])
def test_schema_accepts_actor_names_as_the_loader_does(field: str, names: object) -> None:
    doc = {"version": 1, "rules": [{"id": "r", field: names}]}
    parse_rules(yaml.safe_dump(doc))
    assert [e.message for e in _validator().iter_errors(doc)] == []
    bad = {"version": 1, "rules": [{"id": "r", field: 7}]}
    assert list(_validator().iter_errors(bad))


def test_published_schema_is_the_generated_one() -> None:
    """schema/rules.schema.json is what `clearance rules schema` prints; regenerate it when the
    rules model changes (python -m clearance rules schema > schema/rules.schema.json)."""
    import json

    from clearance.policy import rules_json_schema

    published = (Path(__file__).parent.parent / "schema" / "rules.schema.json").read_text(encoding="utf-8")
    assert json.loads(published) == json.loads(json.dumps(rules_json_schema(), default=str))
