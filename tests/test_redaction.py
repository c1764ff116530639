"""Redaction by default (issue 17, defect 9): what each detector finds and leaves, the keyed
markers, settings from the rules file and the engine, sealing; and, through the engine, that
rules still judge the clear values while memory recognises "the same card" from its marker."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearance import Engine, parse_rules
from clearance.engine.redaction_key import resolve_key
from clearance.errors import RuleError
from clearance.redaction import MARKER, RedactionSettings, Redactor, luhn_valid

KEY = b"k" * 32
CARD, CARD2, TEST_CARD = "4111 1111 1111 1111", "5500005555555559", "4000000000000002"
SECRETS = {
    "card": f"pay with {CARD} today",
    "api_key": "key sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2 set",
    "github": "ghp_" + "a1B2" * 9,
    "slack": "xoxb-1234567890-abcdefABCDEF",
    "aws": "id AKIAIOSFODNN7EXAMPLE here",
    "bearer": "Authorization: Bearer abcDEF123456.ghi-789",
    "bearer_alone": "sent bearer abcDEF123456.ghi-789 along",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl",
    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----",
    "kv": "login failed: password=Tr0ub4dor&3-horse; user bob",
    "json_kv": '{"api_key": "zz-not-a-known-form-123", "n": 1}',
}
NEEDLES = {"card": "1111", "api_key": "A1b2C3d4", "github": "a1B2a1B2", "slack": "1234567890", "aws": "AKIAIOSF",
           "bearer": "abcDEF", "bearer_alone": "abcDEF", "jwt": "eyJzdWIi", "pem": "MIIEow", "kv": "Tr0ub4dor",
           "json_kv": "zz-not"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_each_kind_of_secret_is_replaced_by_a_marker(name: str) -> None:
    out = Redactor(KEY).text(SECRETS[name])
    assert NEEDLES[name] not in out and "horse" not in out
    assert MARKER.search(out), out


@pytest.mark.parametrize("text", ["order 4111111111111112 (fails Luhn)", "call +44 20 7946 0958", "2026-12-06 10:00",
                                  "max_tokens: 5", "sk-short", "tokens used 1234567890123", "req_01HABCDEF"])  # fmt: skip
def test_look_alikes_are_left_alone(text: str) -> None:
    assert Redactor(KEY).text(text) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid(CARD2) and not luhn_valid("4111111111111112")


def test_markers_are_keyed_stable_and_left_alone() -> None:
    r, other = Redactor(KEY), Redactor(b"o" * 32)
    one = r.text(f"card {CARD}")
    assert one == r.text("card 4111-1111-1111-1111") == r.text("card 4111111111111111")  # one card, one marker
    assert one != other.text(f"card {CARD}")  # without the key the marker cannot be recomputed
    assert r.text(one) == one and r.value({"password": one.split()[1]}) == {"password": one.split()[1]}
    assert r.text(CARD2) != r.text("4111111111111111")


def test_fields_named_like_secrets_lose_their_whole_value() -> None:
    r = Redactor(KEY, RedactionSettings(fields=["SSN"]))
    out = r.value({"Password": "hunter2", "db_password": 7, "client-secret": {"a": 1}, "ssn": "078-05-1120",
                   "token": None, "note": "fine", "items": [{"api_key": "x1"}], "max_tokens": 100})  # fmt: skip
    assert out["note"] == "fine" and out["token"] is None and out["max_tokens"] == 100
    for k in ("Password", "db_password", "client-secret", "ssn"):
        assert MARKER.fullmatch(out[k]), k
    assert MARKER.fullmatch(out["items"][0]["api_key"])


def test_configured_patterns_and_bad_settings() -> None:
    r = Redactor(KEY, RedactionSettings(patterns={"employee": r"EMP-\d{6}"}))
    assert r.text("by EMP-424242").startswith("by [redacted:employee:")
    with pytest.raises(ValueError, match="not a regular expression"):
        RedactionSettings(patterns={"x": "("})
    with pytest.raises(ValueError, match="empty string"):
        RedactionSettings(patterns={"x": "a*"})
    with pytest.raises(RuleError, match="redaction"):
        parse_rules("version: 1\nredaction:\n  patterns:\n    Bad Name: 'x'\n")


def test_sealing_gives_back_the_value_and_keeps_no_clear_text() -> None:
    r = Redactor(KEY)
    state = {"trace_id": "t", "input": [{"content": f"card {CARD}"}]}
    sealed = r.seal(state)
    assert "1111" not in str(sealed) and r.unseal(sealed) == state
    assert r.seal({"trace_id": "t"}) == {"trace_id": "t"}  # nothing secret: kept as it is
    assert r.unseal_text(r.seal_text(f'{{"x": "{CARD}"}}')) == f'{{"x": "{CARD}"}}'


def test_the_key_is_kept_beside_a_sqlite_file_never_in_it(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    db = tmp_path / "c.db"
    key = resolve_key(f"sqlite:///{db}", environ=env)
    path = Path(f"{db}.redaction-key")
    assert path.read_text().strip().encode() == key and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_key(f"sqlite:///{db}", environ=env) == key  # the same key on the next open
    assert resolve_key(f"sqlite:///{db}", environ={"CLEARANCE_REDACTION_KEY": "x" * 20}) == b"x" * 20
    with pytest.raises(ValueError, match="16 bytes"):
        resolve_key(f"sqlite:///{db}", explicit="short")


RULES = """
version: 1
redaction:
  fields: [ssn]
  patterns: {employee: 'EMP-\\d{6}'}
rules:
  - id: test-cards
    tool: refund_payment
    when: 'args.card.startsWith("4000")'
    effect: block
"""


def test_rules_judge_the_clear_values_and_the_record_keeps_markers(tmp_path: Path) -> None:
    with Engine(tmp_path / "c.db") as engine:
        engine.apply_rules(parse_rules(RULES))
        blocked = engine.evaluate({"tool": "refund_payment", "arguments": {"card": TEST_CARD, "ssn": "078-05-1120",
                                   "note": "EMP-424242"}})  # fmt: skip
        assert blocked.result.value == "blocked" and [m.rule_id for m in blocked.matched_rules] == ["test-cards"]
        kept = engine.get_action(blocked.request_id).arguments
        assert MARKER.fullmatch(kept["card"]) and MARKER.fullmatch(kept["ssn"]) and "424242" not in kept["note"]
        allowed = engine.evaluate({"tool": "refund_payment", "arguments": {"card": CARD}})
        assert allowed.result.value == "allowed"
        # The claim is bound to the clear arguments by a keyed hash: those run, others do not.
        engine.claim_execution(allowed.request_id, claimant="t", arguments={"card": CARD})


def test_memory_recognises_the_same_card_from_its_marker(tmp_path: Path) -> None:
    with Engine(tmp_path / "c.db") as engine:
        for i in range(4):
            for card, status in ((CARD, "harmful"), (CARD2, "succeeded")):
                d = engine.evaluate({"tool": "refund_payment", "actor": f"a{i}", "value": 50,
                                     "arguments": {"card": card, "amount": 50}})  # fmt: skip
                engine.report_outcome(d.request_id, status, severity=0.9 if status == "harmful" else 0.0)
        bad = engine.evaluate({"tool": "refund_payment", "actor": "z", "value": 50, "arguments": {"card": CARD, "amount": 50}})
        good = engine.evaluate({"tool": "refund_payment", "actor": "z", "value": 50, "arguments": {"card": CARD2, "amount": 50}})
    assert bad.risk_score > good.risk_score + 0.2, (bad.risk_score, good.risk_score)
    assert bad.precedents and all(p.outcome == "harmful" for p in bad.precedents[:3]), bad.precedents


_FRAGMENTS = ["4111 1111 1111 1111", "4111111111111111", "sk-", "proj-", "abcdefghijklmnopqrstuvwxyz0123", "Bearer ",
              "BASIC ", "password", "=", ": ", '"', "'", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----",
              "eyJhbGciOi", ".", "eyJzdWIi", "ghp_", "AKIA", "ABCDEFGHIJKLMNOP", "xoxb-", "glpat-", "rk_live_", "AIza",
              "[redacted:card:0123456789abcdef]", " ", "-", "_", "0", "7", "api_key", "token", "x"]  # fmt: skip


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
@settings(max_examples=400, deadline=None)
def test_skipping_the_scan_never_changes_what_is_redacted(text: str) -> None:
    from clearance.redaction import _BUILTIN

    r = Redactor(b"k" * 32)
    assert r.text(text) == _BUILTIN.sub(r._replace, text)


def test_memory_decides_the_same_whatever_the_stores_redaction_key(tmp_path: Path) -> None:
    """A marker's keyed part is a per-store secret: two stores with other keys, fed the same
    history, must judge the next calls alike (the keyed hex once went into the vector's hashed
    buckets, so the decision-quality tables changed from run to run)."""
    from datetime import datetime, timedelta, timezone

    from clearance import Engine

    def history(key: str) -> list[tuple[str, float]]:
        now = [datetime(2025, 3, 3, tzinfo=timezone.utc)]
        out = []
        with Engine(tmp_path / f"{key[:4]}.db", redaction_key=key, clock=lambda: now[0]) as engine:
            for i in range(120):
                now[0] += timedelta(minutes=3)
                card = ["4111111111111111", "5555555555554444", "4012888888881881"][i % 3]
                d = engine.evaluate({"tool": "charge_card", "actor": "shop",
                                     "arguments": {"card_number": card, "amount": 10 + i % 7}})  # fmt: skip
                out.append((d.result.value, d.risk_score))
                if d.allowed:
                    engine.record_execution(d.request_id, "executed")
                    engine.report_outcome(d.request_id, "harmful" if card.startswith("5") else "succeeded",
                                          severity=1.0 if card.startswith("5") else 0.0)  # fmt: skip
        return out

    a, b = history("a" * 64), history("b" * 64)
    assert any(r != a[0][1] for _, r in a)  # memory learnt something to differ on
    assert a == b
