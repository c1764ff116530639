"""The secret scan (issue 17's acceptance for defect 9): an agent runs through every path with
secrets in its messages, arguments, tool results and errors, approvals with comments,
outcomes, a suspended run; then every table of the store, every audit body, clearance's logs,
the webhook bodies and ``/metrics`` are searched for the secrets in clear. There must be none,
while the tool that ran after approval still received the real card number."""

from __future__ import annotations

import json

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from adapter_support import guard_for
from server_support import make_keys
from sqlalchemy import create_engine, inspect, text
from test_server_webhooks import Receiver, settings, wait_for

from clearance import Engine, GuardedOpenAI, parse_rules
from clearance.remote import RemoteEngine
from clearance.server import ServerThread
from clearance.testing import turn

CARD = "4111 1111 1111 1111"
TEST_CARD = "4000 0000 0000 0002"
PASSWORD = "Tr0ub4dor&3-horse"
API_KEY = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2"
GITHUB = "ghp_" + "a1B2" * 9
TOKEN = "abcDEF123456.ghi-789"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl"
PEM_BODY = "MIIEowIBAAKCAQEA7xQ9"
PEM = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----"
AWS = "AKIAIOSFODNN7EXAMPLE"
EMPLOYEE = "EMP-424242"
#: What must not appear anywhere (a card also without its spaces).
NEEDLES = [CARD, CARD.replace(" ", ""), TEST_CARD.replace(" ", ""), TEST_CARD, "Tr0ub4dor", API_KEY, GITHUB, TOKEN,
           JWT, PEM_BODY, AWS, EMPLOYEE]  # fmt: skip

RULES = """
version: 1
redaction:
  patterns: {employee: 'EMP-\\d{6}'}
rules:
  - id: test-cards
    tool: refund_payment
    when: 'args.card.startsWith("4000")'
    effect: block
  - id: refunds
    tool: refund_payment
    require_approval_above: 500
"""


def scan(where: str, texts: Iterable[Any]) -> list[str]:
    found = []
    for t in texts:
        s = str(t)
        found += [f"{where}: {n!r} in {s[:160]!r}" for n in NEEDLES if n in s]
    return found


def store_texts(url: str) -> list[str]:
    """Every row of every table, as text."""
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return [repr(tuple(row)) for name in inspect(conn).get_table_names()
                    for row in conn.execute(text(f'SELECT * FROM "{name}"'))]  # fmt: skip
    finally:
        eng.dispose()


def test_no_secret_is_kept_sent_or_logged_in_clear(tmp_path: Path, serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="clearance")
    db = tmp_path / "c.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    tokens = make_keys(engine)
    receiver = Receiver().start()
    refunded: list[str] = []
    try:
        with ServerThread(engine, webhooks=settings(f"{receiver.url}/hook")) as server:
            agent = RemoteEngine(server.url, api_key=tokens["agent"])
            approver = RemoteEngine(server.url, api_key=tokens["approver"])
            model = serve(
                turn.function_calls([("lookup_customer", {"query": f"token {JWT}", "password": PASSWORD}, "c1"),
                                     ("charge_card", {"card": CARD, "amount": 5}, "c2"),
                                     ("refund_payment", {"card": TEST_CARD, "amount": 10, "note": "", "auth": ""}, "c3")]),
                turn.function_call("refund_payment", {"card": CARD, "amount": 700, "note": f"by {EMPLOYEE}",
                                                      "auth": f"Bearer {TOKEN}"}, call_id="c4"),  # fmt: skip
                turn.text("done"),
            )
            guard = guard_for(model, agent, GuardedOpenAI)

            def lookup_customer(query: str, password: str) -> str:
                return f"found; their key is {API_KEY} and deploy key {GITHUB}\n{PEM}"

            def charge_card(card: str, amount: float) -> str:
                raise RuntimeError(f"gateway refused {card}: credentials {AWS} password={PASSWORD}")

            def refund_payment(card: str, amount: float, note: str = "", auth: str = "") -> str:
                refunded.append(card)
                return f"refunded {amount} to {card}"

            guard.tool("lookup_customer", lookup_customer)
            guard.tool("charge_card", charge_card)
            guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
            first = guard.run(messages=[{"role": "user", "content": f"Refund card {CARD}; my password is {PASSWORD}"}],
                              model="gpt-4.1")  # fmt: skip
            last = first["execution"]["last"]
            assert last["status"] == "approval_required", first["execution"]
            approval_id = last["decision"]["approval_id"]
            approver.resolve_approval(approval_id, "approved", approver="alice", comment=f"card {CARD} checked, {JWT}")
            done = guard.resume_after_approval(approval_id)
            assert done["output_text"] == "done"
            assert refunded == [CARD]  # the tool got the real card back from the sealed run
            statuses = {e["tool"]: e["status"] for e in first["execution"]["events"] if e.get("status")}
            assert statuses.get("lookup_customer") == "executed" and statuses.get("charge_card") == "failed"
            assert statuses.get("refund_payment") in ("blocked", "approval_required")
            agent.report_outcome(last["decision"]["request_id"], "harmful", severity=0.5,
                                 description=f"chargeback on {CARD}, leaked {GITHUB}")  # fmt: skip
            # A blocked call is refused by the rule that reads the card's clear prefix.
            with engine.store.read() as tx:
                rows = tx.conn.execute(text("SELECT decision FROM decisions WHERE result = 'blocked'")).all()
            assert rows and "test-cards" in rows[0][0]
            hooks = wait_for(lambda: len(receiver.on("/hook")) >= 2 and receiver.on("/hook"), what="two webhooks")
            metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {tokens['admin']}"}).text
            agent.close()
            approver.close()
    finally:
        receiver.stop()
        engine.close()
    assert "clearance_" in metrics
    logs = [r.getMessage() + (r.exc_text or "") for r in caplog.records if r.name.startswith("clearance")]
    stored = store_texts(f"sqlite:///{db}")
    leaks = (scan("store", stored) + scan("webhook", [h.body.decode() for h in hooks])
             + scan("metrics", [metrics]) + scan("logs", logs))  # fmt: skip
    assert not leaks, "\n".join(leaks)
    # The secrets are kept as markers (a decision's arguments live once, in its decisions row;
    # its event refers to them), and the audit trail reads them back as markers.
    assert any("[redacted:card:" in b for b in stored) and any("[redacted:employee:" in b for b in stored)
    with Engine(db) as reopened:
        bodies = [json.dumps(e.payload) for e in reopened.audit_events(limit=1000)]
    assert any("[redacted:card:" in b for b in bodies) and any("[redacted:employee:" in b for b in bodies)
    assert not scan("audit trail", bodies)


def test_postgres_keeps_no_secret_in_clear(pg_url: str) -> None:
    with Engine(pg_url, redaction_key="a test key of enough length") as engine:
        engine.apply_rules(parse_rules(RULES))
        d = engine.evaluate({"tool": "refund_payment", "value": 900, "actor": "a",
                             "arguments": {"card": CARD, "password": PASSWORD, "note": f"{EMPLOYEE} {JWT}"}})  # fmt: skip
        engine.save_run("run_1", {"trace_id": d.trace_id, "input": f"card {CARD}"}, [d.approval_id])
        engine.resolve_approval(d.approval_id, "approved", approver="b", comment=f"ok {API_KEY}")
        assert engine.take_run(d.approval_id)["input"] == f"card {CARD}"
        engine.claim_execution(d.request_id, claimant="t", arguments={"card": CARD, "password": PASSWORD,
                                                                      "note": f"{EMPLOYEE} {JWT}"})  # fmt: skip
        engine.record_execution(d.request_id, "failed", {"echo": f"Bearer {TOKEN}"}, f"error with {AWS}")
        engine.report_outcome(d.request_id, "failed", description=f"{GITHUB} leaked")
        engine.refuse_proposal("bad_tool", f"bad JSON: {{\"card\": \"{CARD}\"")
    leaks = scan("postgres", store_texts(pg_url))
    assert not leaks, "\n".join(leaks)
