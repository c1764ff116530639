"""The CLI as a shell script sees it: real processes (each forked from a launcher that has paid for
the imports: cli_support.run_cli; the last test starts a fresh interpreter), exit codes, stdout
JSON, stderr errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RULES = ROOT / "examples" / "rules.yaml"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def run(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m clearance --db DB ARGS`` in a process of its own (forked: cli_support.run_cli)."""
    env = {k: v for k, v in os.environ.items() if k != "CLEARANCE_DB"}
    return run_cli(["--db", str(db), *args], input=stdin, env=dict(env, COLUMNS="200"), timeout=60)


REFUND = ["--tool", "refund_payment", "--actor", "agent-7", "--domain", "customer_transactions"]


def test_check_exit_codes_follow_the_verdict(db: Path) -> None:
    assert run(db, "rules", "apply", str(EXAMPLE_RULES)).returncode == 0
    allowed = run(db, "check", *REFUND, "--value", "120", "--args", '{"currency": "EUR"}')
    blocked = run(db, "check", *REFUND, "--value", "5000")
    pending = run(db, "check", *REFUND, "--value", "700")
    assert (allowed.returncode, blocked.returncode, pending.returncode) == (0, 3, 4)
    assert "exceeds max_value 2,000 in rule refunds-eu" in blocked.stdout
    assert "approval" in pending.stdout


def test_check_json_prints_the_decision(db: Path) -> None:
    res = run(db, "check", "--rules", str(EXAMPLE_RULES), *REFUND, "--value", "1", "--args", '{"currency": "USD"}', "--json")
    assert res.returncode == 3, res.stderr
    decision = json.loads(res.stdout)
    assert decision["result"] == "blocked"
    assert decision["allowed"] is False and decision["requires_approval"] is False
    assert [m["rule_id"] for m in decision["matched_rules"]] == ["no-foreign-currency"]
    assert decision["policy_version"].startswith("file:")


def test_check_from_json_file_and_stdin(db: Path, tmp_path: Path) -> None:
    action = {"tool": "refund_payment", "actor": "agent-1", "domain": "customer_transactions", "value": 900}
    path = tmp_path / "action.json"
    path.write_text(json.dumps(action))
    from_file = run(db, "check", "--rules", str(EXAMPLE_RULES), "--file", str(path), "--json")
    from_stdin = run(db, "check", "--rules", str(EXAMPLE_RULES), "--file", "-", "--value", "50", "--json", stdin=json.dumps(action))
    assert from_file.returncode == 4
    assert from_stdin.returncode == 0  # flags override the file
    assert json.loads(from_stdin.stdout)["result"] == "allowed"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "--tool", "x", "--args", "{bad"], "not valid JSON"),
        (["check", "--tool", "x", "--value", "lots"], "--value"),
        (["check", "--actor", "a"], "--tool"),
        (["check", "--tool", "x", "--value", "nan"], "finite"),
    ],
)
def test_usage_errors_exit_2_and_record_nothing(db: Path, args: list[str], needle: str) -> None:
    res = run(db, *args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert not db.exists()  # nothing recorded: not even a store was created


def test_refused_operations_exit_1_with_one_clear_line(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: r1\n    max_value: -5\n")
    res = run(db, "rules", "apply", str(bad))
    assert res.returncode == 1
    assert "rule 'r1'" in res.stderr and "max_value" in res.stderr
    assert "Traceback" not in res.stderr
    for args, needle in (
        (["approvals", "approve", "apr_missing", "--by", "alice"], "unknown approval id 'apr_missing'"),
        (["outcomes", "report", "req_missing", "--status", "harmful"], "unknown request id 'req_missing'"),
        (["decisions", "show", "req_missing"], "unknown request id"),
        (["explain", "req_missing"], "unknown request id 'req_missing'"),
    ):
        res = run(db, *args)
        assert res.returncode == 1, args
        assert needle in res.stderr
        assert "Traceback" not in res.stderr
    assert json.loads(run(db, "rules", "show", "--json").stdout)["policy_version"] == "0"


def test_rules_validate_reports_cel_position(db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cel.yaml"
    bad.write_text("rules:\n  - id: fx\n    when: 'args.currency != '\n")
    res = run(db, "rules", "validate", str(bad))
    assert res.returncode == 1
    assert "rule 'fx'" in res.stderr and "column" in res.stderr
    ok = run(db, "rules", "validate", str(EXAMPLE_RULES), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True


def test_approval_flow_through_the_cli(db: Path) -> None:
    run(db, "rules", "apply", str(EXAMPLE_RULES))
    decision = json.loads(run(db, "check", *REFUND, "--value", "700", "--json").stdout)
    listed = json.loads(run(db, "approvals", "list", "--json").stdout)
    assert [a["approval_id"] for a in listed] == [decision["approval_id"]]
    approved = run(db, "approvals", "approve", decision["approval_id"], "--by", "alice", "--comment", "ok", "--json")
    assert approved.returncode == 0
    assert json.loads(approved.stdout)["status"] == "approved"
    again = run(db, "approvals", "reject", decision["approval_id"], "--by", "bob")
    assert again.returncode == 1 and "already approved by alice" in again.stderr
    assert json.loads(run(db, "approvals", "list", "--json").stdout) == []
    everything = json.loads(run(db, "approvals", "list", "--all", "--json").stdout)
    assert [a["status"] for a in everything] == ["approved"]


def test_outcome_report_is_idempotent_on_event_id(db: Path) -> None:
    rid = json.loads(run(db, "check", "--tool", "send_email", "--json").stdout)["request_id"]
    for _ in range(2):
        res = run(db, "outcomes", "report", rid, "--status", "harmful", "--severity", "0.7", "--cost", "12.5",
                  "--event-id", "evt-1", "--observed-at", "2026-01-02T03:04:05")  # fmt: skip
        assert res.returncode == 0, res.stderr
    shown = json.loads(run(db, "decisions", "show", rid, "--json").stdout)
    assert len(shown["outcomes"]) == 1
    assert shown["outcomes"][0]["observed_at"].startswith("2026-01-02T03:04:05")
    bad = run(db, "outcomes", "report", rid, "--status", "harmful", "--severity", "3")
    assert bad.returncode == 2


def test_kill_switch_on_status_off(db: Path) -> None:
    on = run(db, "kill-switch", "on", "--tool", "refund_payment", "--reason", "incident 42", "--by", "ops")
    assert on.returncode == 0
    status = json.loads(run(db, "kill-switch", "status", "--json").stdout)
    assert status[0]["scope"] == "tool" and status[0]["value"] == "refund_payment"
    blocked = run(db, "check", "--tool", "refund_payment")
    assert blocked.returncode == 3 and "incident 42" in blocked.stdout
    assert run(db, "check", "--tool", "send_email").returncode == 0
    assert run(db, "kill-switch", "on", "--tool", "a", "--actor", "b").returncode == 1
    assert run(db, "kill-switch", "off", "--tool", "refund_payment").returncode == 0
    assert run(db, "check", "--tool", "refund_payment").returncode == 0


def test_audit_verify_passes_then_fails_after_tampering(db: Path) -> None:
    import sqlite3

    run(db, "check", "--tool", "send_email")
    run(db, "check", "--tool", "send_email")
    ok = run(db, "audit", "verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["events_checked"] == 2
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET body = replace(body, 'send_email', 'send_mail') WHERE seq = 1")
    broken = run(db, "audit", "verify")
    assert broken.returncode == 1
    assert "event 1" in broken.stderr


def test_db_from_environment(tmp_path: Path) -> None:
    env = dict(os.environ, CLEARANCE_DB=str(tmp_path / "env.db"))
    res = subprocess.run([sys.executable, "-m", "clearance", "check", "--tool", "t"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0
    assert (tmp_path / "env.db").exists()
