"""The HTTP API, endpoint by endpoint, against a real server on loopback (uvicorn in a thread,
a SQLite file); what it records is read back through a separate embedded Engine."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from server_support import Live, assert_envelope

from clearance import Engine

REFUND = {"tool": "refund_payment", "arguments": {"order_id": "o1", "amount": 700}, "domain": "shop", "value": 700}


def decide(live: Live, action: dict[str, Any], who: str = "agent") -> dict[str, Any]:
    r = live.client(who).post("/v1/decisions", json=action)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def audit_types(live: Live) -> list[str]:
    with Engine(live.db) as eng:
        return [e.type for e in eng.audit_events(limit=1000)]


# -- publication, health ------------------------------------------------------------------------
def test_openapi_document_is_published_under_v1(live: Live) -> None:
    doc = httpx.get(f"{live.url}/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert all(p.startswith("/v1/") for p in doc["paths"] if p != "/metrics")
    assert "ErrorEnvelope" in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_health_and_readiness_need_no_key(live: Live) -> None:
    assert live.client(None).get("/v1/health").json()["status"] == "ok"
    ready = live.client(None).get("/v1/ready").json()
    assert ready == {"status": "ready", "policy_version": "1", "detail": None}


# -- decisions ------------------------------------------------------------------------------------
def test_evaluate_binds_the_agent_identity_and_is_durable(live: Live) -> None:
    d = decide(live, REFUND)
    assert d["result"] == "requires_approval" and d["requires_approval"] is True and d["allowed"] is False
    assert d["actor"] == "agent-7"  # the key's identity
    assert "require_approval_above 500" in d["reason"]
    with Engine(live.db) as eng:  # committed before the answer
        assert eng.get_decision(d["request_id"]).approval_id == d["approval_id"]
    again = live.client("agent").get(f"/v1/decisions/{d['request_id']}").json()
    assert again == d
    action = live.client("agent").get(f"/v1/decisions/{d['request_id']}/action").json()
    assert action["arguments"] == REFUND["arguments"] and action["actor"] == "agent-7"


def test_an_agent_key_cannot_decide_for_another_actor_and_the_refusal_is_audited(live: Live) -> None:
    r = live.client("agent").post("/v1/decisions", json={**REFUND, "actor": "agent-8"})
    err = assert_envelope(r, 403, "forbidden")
    assert err["field"] == "actor" and "agent-8" in err["message"]
    assert audit_types(live).count("auth.refused") == 1
    assert decide(live, {**REFUND, "actor": "agent-8"}, who="admin")["actor"] == "agent-8"  # admins may


def test_batch_evaluate_decides_each_in_order(live: Live) -> None:
    actions = [{"tool": "refund_payment", "value": v, "arguments": {"n": i}} for i, v in enumerate((10, 700, 5000))]
    r = live.client("agent").post("/v1/decisions/batch", json={"actions": actions})
    assert [d["result"] for d in r.json()["decisions"]] == ["allowed", "requires_approval", "blocked"]
    assert_envelope(live.client("agent").post("/v1/decisions/batch", json={"actions": []}), 422, "validation_error")


def test_claim_record_and_read_an_execution(live: Live) -> None:
    d = decide(live, {"tool": "refund_payment", "value": 10, "arguments": {"a": 1}})
    c = live.client("agent")
    rid = d["request_id"]
    assert c.get(f"/v1/decisions/{rid}/execution").json() is None
    assert_envelope(c.post(f"/v1/decisions/{rid}/claim", json={"claimant": "w", "arguments": {"a": 2}}), 409, "arguments_mismatch")
    claim = c.post(f"/v1/decisions/{rid}/claim", json={"claimant": "w", "arguments": {"a": 1}}).json()
    assert claim["status"] == "unknown" and claim["claimed_by"] == "w"
    assert_envelope(c.post(f"/v1/decisions/{rid}/claim", json={"claimant": "w2"}), 409, "already_claimed")
    rec = c.post(f"/v1/decisions/{rid}/execution", json={"status": "executed", "result_summary": {"id": "re_1"}}).json()
    assert rec["status"] == "executed" and rec["result_summary"] == {"id": "re_1"}
    assert c.get(f"/v1/decisions/{rid}/execution").json()["status"] == "executed"
    assert_envelope(c.post(f"/v1/decisions/{rid}/execution", json={"status": "failed"}), 409, "illegal_transition")
    assert_envelope(c.post(f"/v1/decisions/{rid}/execution", json={"status": "sideways"}), 422, "validation_error")


def test_batch_execution_reports_succeed_or_fail_one_by_one(live: Live) -> None:
    d = decide(live, {"tool": "refund_payment", "value": 10})
    reports = [{"request_id": d["request_id"], "status": "executed"}, {"request_id": "req_missing", "status": "executed"}]
    results = live.client("agent").post("/v1/executions/batch", json={"reports": reports}).json()["results"]
    assert results[0]["ok"] is True and results[0]["execution"]["status"] == "executed"
    assert results[1]["ok"] is False and results[1]["error"]["type"] == "unknown_request"


def test_outcomes_are_idempotent_on_event_id(live: Live) -> None:
    rid = decide(live, {"tool": "refund_payment", "value": 10})["request_id"]
    c = live.client("agent")
    body = {"status": "harmful", "severity": 0.8, "cost": 120, "event_id": "chargeback-1"}
    first = c.post(f"/v1/decisions/{rid}/outcomes", json=body).json()
    again = c.post(f"/v1/decisions/{rid}/outcomes", json=body).json()
    assert first == again and first["reported_by"] == "agent-7"
    assert [o["event_id"] for o in c.get(f"/v1/decisions/{rid}/outcomes").json()] == ["chargeback-1"]
    batch = c.post("/v1/outcomes/batch", json={"outcomes": [{**body, "request_id": rid, "event_id": "e2"},
                                                            {**body, "request_id": "req_x", "event_id": "e3"}]}).json()  # fmt: skip
    assert [r["ok"] for r in batch["results"]] == [True, False]
    assert_envelope(c.post(f"/v1/decisions/{rid}/outcomes", json={**body, "severity": 2}), 422, "validation_error")
    err = assert_envelope(c.post(f"/v1/decisions/{rid}/outcomes", json={**body, "observed_at": "2026-01-01T10:00:00"}), 422)
    assert err["field"] == "body.observed_at"  # a time without a zone is refused, not guessed


def test_precedents_of_a_decision(live: Live) -> None:
    rid = decide(live, {"tool": "refund_payment", "value": 10})["request_id"]
    body = live.client("approver").get(f"/v1/decisions/{rid}/precedents").json()
    assert body["request_id"] == rid and isinstance(body["precedents"], list) and 0 <= body["risk_score"] <= 1
    assert_envelope(live.client("approver").get("/v1/decisions/req_nope/precedents"), 404, "unknown_request")


# -- approvals --------------------------------------------------------------------------------------
def test_approver_resolves_as_its_own_identity(live: Live) -> None:
    d = decide(live, REFUND)
    aid = d["approval_id"]
    pending = live.client("approver").get("/v1/approvals").json()
    assert [a["approval_id"] for a in pending] == [aid]
    err = assert_envelope(live.client("approver").post(f"/v1/approvals/{aid}/resolve",
                                                       json={"resolution": "approved", "approver": "bob"}), 403)  # fmt: skip
    assert err["field"] == "body.approver"
    done = live.client("approver").post(f"/v1/approvals/{aid}/resolve", json={"resolution": "approved", "comment": "ok"}).json()
    assert done["status"] == "approved" and done["resolved_by"] == "alice"
    assert_envelope(live.client("approver2").post(f"/v1/approvals/{aid}/resolve", json={"resolution": "rejected"}),
                    409, "approval_not_pending")  # fmt: skip
    assert live.client("approver").get("/v1/approvals", params={"status": "approved"}).json()[0]["approval_id"] == aid


def test_an_approver_cannot_approve_a_call_of_its_own_identity(live: Live) -> None:
    d = decide(live, REFUND, who="carol-agent")
    assert d["actor"] == "carol"
    r = live.client("carol-approver").post(f"/v1/approvals/{d['approval_id']}/resolve", json={"resolution": "approved"})
    assert "cannot approve" in assert_envelope(r, 403, "forbidden")["message"]
    assert live.client("approver").get(f"/v1/approvals/{d['approval_id']}").json()["status"] == "pending"


def test_two_approvals_need_two_distinct_approvers(live: Live) -> None:
    aid = decide(live, {"tool": "wire_transfer", "value": 10})["approval_id"]
    first = live.client("approver").post(f"/v1/approvals/{aid}/resolve", json={"resolution": "approved"}).json()
    assert first["status"] == "pending" and [v["approver"] for v in first["votes"]] == ["alice"]
    assert_envelope(live.client("approver").post(f"/v1/approvals/{aid}/resolve", json={"resolution": "approved"}),
                    409, "duplicate_vote")  # fmt: skip
    second = live.client("approver2").post(f"/v1/approvals/{aid}/resolve", json={"resolution": "approved"}).json()
    assert second["status"] == "approved" and second["resolved_by"] == "bob"


def test_wait_answers_when_the_approval_is_resolved(live: Live) -> None:
    aid = decide(live, REFUND)["approval_id"]
    got: dict[str, Any] = {}

    def wait() -> None:
        got["r"] = live.client("agent").get(f"/v1/approvals/{aid}/wait", params={"timeout_seconds": 60})

    waiter = threading.Thread(target=wait)
    waiter.start()
    live.client("approver").post(f"/v1/approvals/{aid}/resolve", json={"resolution": "rejected", "comment": "no"})
    waiter.join(timeout=30)
    assert got["r"].status_code == 200 and got["r"].json()["status"] == "rejected"


def test_wait_times_out_with_the_approval_still_pending(live: Live) -> None:
    aid = decide(live, REFUND)["approval_id"]
    r = live.client("approver").get(f"/v1/approvals/{aid}/wait", params={"timeout_seconds": 0.1})
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert_envelope(live.client("approver").get("/v1/approvals/apr_nope/wait"), 404, "not_found")


def test_agents_read_only_their_own_approvals(live: Live) -> None:
    aid = decide(live, REFUND, who="carol-agent")["approval_id"]
    assert_envelope(live.client("agent").get(f"/v1/approvals/{aid}"), 403, "forbidden")
    assert live.client("carol-agent").get(f"/v1/approvals/{aid}").json()["actor"] == "carol"


# -- rules ------------------------------------------------------------------------------------------
def test_rules_read_apply_and_versions(live: Live) -> None:
    admin = live.client("admin")
    doc = admin.get("/v1/rules").json()
    assert doc["policy_version"] == "1" and [r["id"] for r in doc["rules"]] == ["refunds", "never-delete", "wires-two-approvers"]
    info = admin.put("/v1/rules", json={"yaml": "version: 1\nrules:\n  - id: only\n    tool: x\n    effect: block\n"}).json()
    assert info["version"] == 2 and info["added"] == ["only"] and set(info["removed"]) == {r["id"] for r in doc["rules"]}
    same = admin.put("/v1/rules", json={"document": {"version": 1, "rules": [{"id": "only", "tool": "x", "effect": "block"}]}})
    assert same.json()["unchanged"] is True
    assert [v["version"] for v in admin.get("/v1/rules/versions").json()] == [1, 2]
    assert [r["id"] for r in admin.get("/v1/rules/versions/1").json()["rules"]] == [r["id"] for r in doc["rules"]]
    assert_envelope(admin.get("/v1/rules/versions/9"), 404, "not_found")
    bad = admin.put("/v1/rules", json={"yaml": "rules:\n  - id: r\n    when: 'args.x >'\n"})
    assert "r" in assert_envelope(bad, 422, "rule_error")["message"]
    assert_envelope(admin.put("/v1/rules", json={}), 422, "validation_error")


def test_validate_does_not_apply(live: Live) -> None:
    c = live.client("approver")
    ok = c.post("/v1/rules/validate", json={"yaml": "rules:\n  - id: a\n    tool: t\n    max_value: 3\n"}).json()
    assert ok == {"valid": True, "rules": ["a"], "error": None}
    bad = c.post("/v1/rules/validate", json={"yaml": "rules:\n  - id: a\n    max_valeu: 3\n"}).json()
    assert bad["valid"] is False and "max_valeu" in bad["error"]
    assert c.get("/v1/rules").json()["policy_version"] == "1"


def test_single_rule_create_update_pause_resume_delete(live: Live) -> None:
    admin = live.client("admin")
    rule = {"id": "small-only", "tool": "small", "max_value": 5}
    assert admin.post("/v1/rules", json=rule).json()["added"] == ["small-only"]
    assert_envelope(admin.post("/v1/rules", json=rule), 409, "conflict")
    assert decide(live, {"tool": "small", "value": 9})["result"] == "blocked"
    assert admin.post("/v1/rules/small-only/pause").json()["changed"] == ["small-only"]
    assert admin.get("/v1/rules/small-only").json()["rule"]["status"] == "paused"
    assert decide(live, {"tool": "small", "value": 9})["result"] == "allowed"
    admin.post("/v1/rules/small-only/resume")
    assert decide(live, {"tool": "small", "value": 9})["result"] == "blocked"
    assert_envelope(admin.put("/v1/rules/small-only", json={**rule, "id": "other"}), 422, "validation_error")
    updated = admin.put("/v1/rules/small-only", json={**rule, "max_value": 50}).json()
    assert updated["changed"] == ["small-only"]
    view = admin.get("/v1/rules/small-only").json()
    assert view["rule"]["max_value"] == 50 and view["rule_version"] == 4
    assert decide(live, {"tool": "small", "value": 9})["result"] == "allowed"
    assert admin.delete("/v1/rules/small-only").json()["removed"] == ["small-only"]
    assert_envelope(admin.get("/v1/rules/small-only"), 404, "not_found")
    assert_envelope(admin.post("/v1/rules/nope/pause"), 404, "not_found")


def test_rules_with_numbers_the_store_cannot_hold_are_refused(live: Live) -> None:
    admin = live.client("admin")
    r = admin.post("/v1/rules", json={"id": "huge", "tool": "t", "max_per_hour": 10**30})
    assert assert_envelope(r, 422, "rule_error")["field"] == "body.max_per_hour"
    assert_envelope(admin.post("/v1/rules", json={"id": "ttl", "tool": "t", "require_approval_above": 1,
                                                  "approval_ttl": "99999999d"}), 422)  # fmt: skip
    assert decide(live, {"tool": "t", "value": 2})["result"] == "allowed"


def test_dry_run_records_nothing(live: Live) -> None:
    before = len(audit_types(live))
    body = {"actions": [{"tool": "refund_payment", "value": 700}, {"tool": "delete_account"}]}
    out = live.client("approver").post("/v1/rules/dry-run", json=body).json()
    assert [v["result"] for v in out["verdicts"]] == ["requires_approval", "blocked"] and out["policy_version"] == "1"
    other = {**body, "document": {"rules": [{"id": "none", "tool": "nothing"}]}}
    assert [v["result"] for v in live.client("approver").post("/v1/rules/dry-run", json=other).json()["verdicts"]] == ["allowed"] * 2
    assert len(audit_types(live)) == before


# -- kill switch, audit -----------------------------------------------------------------------------
def test_kill_switch_blocks_until_lifted(live: Live) -> None:
    admin = live.client("admin")
    sw = admin.post("/v1/kill-switches", json={"tool": "refund_payment", "reason": "incident 42"}).json()
    assert sw["scope"] == "tool" and sw["activated_by"] == "ops"
    d = decide(live, {"tool": "refund_payment", "value": 1})
    assert d["result"] == "blocked" and "incident 42" in d["reason"]
    assert [s["value"] for s in live.client("approver").get("/v1/kill-switches").json()] == ["refund_payment"]
    assert admin.post("/v1/kill-switches/deactivate", json={"tool": "refund_payment"}).json() == {"deactivated": True}
    assert admin.post("/v1/kill-switches/deactivate", json={"tool": "refund_payment"}).json() == {"deactivated": False}
    assert decide(live, {"tool": "refund_payment", "value": 1})["result"] == "allowed"
    assert_envelope(admin.post("/v1/kill-switches", json={"tool": "a", "actor": "b"}), 422, "validation_error")


def test_audit_query_and_verify(live: Live) -> None:
    rid = decide(live, REFUND)["request_id"]
    c = live.client("approver")
    events = c.get("/v1/audit/events", params={"request_id": rid}).json()
    assert [e["type"] for e in events] == ["decision.made", "approval.requested"]
    after = c.get("/v1/audit/events", params={"after_seq": events[0]["seq"], "limit": 1}).json()
    assert [e["seq"] for e in after] == [events[0]["seq"] + 1]
    report = c.get("/v1/audit/verify").json()
    assert report["ok"] is True and report["events_checked"] >= 2


# -- keys -------------------------------------------------------------------------------------------
def test_keys_created_through_the_api_work_and_revocation_is_immediate(live: Live) -> None:
    admin = live.client("admin")
    created = admin.post("/v1/keys", json={"name": "billing", "role": "agent", "identity": "billing-bot"}).json()
    token = created["token"]
    assert token.startswith("clr_") and created["created_by"] == "ops"
    assert "token" not in admin.get("/v1/keys").json()[0]
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/v1/whoami").json() == {"key_id": created["key_id"], "name": "billing", "role": "agent",
                                               "identity": "billing-bot"}  # fmt: skip
        revoked = admin.post(f"/v1/keys/{created['key_id']}/revoke").json()
        assert revoked["revoked_by"] == "ops" and revoked["revoked_at"]
        assert_envelope(c.get("/v1/whoami"), 401, "unauthorized")
    assert created["key_id"] not in {k["key_id"] for k in admin.get("/v1/keys").json()}
    assert created["key_id"] in {k["key_id"] for k in admin.get("/v1/keys", params={"include_revoked": True}).json()}
    assert_envelope(admin.post("/v1/keys/0000000000000000/revoke"), 404, "not_found")
    with Engine(live.db) as eng:  # only a hash of the secret is stored
        with eng.store.read() as tx:
            stored = [tuple(r) for r in tx.conn.exec_driver_sql("SELECT * FROM api_keys")]
    assert not any(token.split("_", 2)[2] in str(row) for row in stored)


def test_bad_keys_are_401(live: Live) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": f"Bearer {live.tokens['agent'][:-2]}xx"}):  # fmt: skip
        r = httpx.post(f"{live.url}/v1/decisions", json=REFUND, headers=headers)
        assert_envelope(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    # Bounded auditing: the first three refusals of one client, key and route in a minute are
    # written as they come; the fourth waits for the minute's summary (tests/test_refusals.py).
    assert audit_types(live).count("auth.refused") == 3


# -- errors and limits ------------------------------------------------------------------------------
def test_unknown_routes_methods_and_ids_use_the_envelope(live: Live) -> None:
    c = live.client("admin")
    assert_envelope(c.get("/v1/nothing"), 404, "not_found")
    assert_envelope(c.delete("/v1/decisions"), 405, "method_not_allowed")
    assert_envelope(c.get("/v1/decisions/req_nope"), 404, "unknown_request")
    assert_envelope(c.get("/v1/approvals/apr_nope"), 404, "not_found")


def test_validation_errors_name_the_field(live: Live) -> None:
    c = live.client("agent")
    cases = [
        ({"tool": "t", "value": "lots"}, "body.value"),
        ({"tool": ""}, "body.tool"),
        ({"tool": "t", "unexpected": 1}, "body.unexpected"),
        ({}, "body.tool"),
        ([1, 2], "body"),
    ]
    for body, field in cases:
        assert assert_envelope(c.post("/v1/decisions", json=body), 422, "validation_error")["field"] == field
    bad_json = c.post("/v1/decisions", content=b'{"tool": ', headers={"content-type": "application/json"})
    assert assert_envelope(bad_json, 422, "validation_error")["field"] == "body"
    deep = c.post("/v1/decisions", content=b"[" * 50_000 + b"]" * 50_000, headers={"content-type": "application/json"})
    # Nested past what the parser takes: refused like any malformed body, not a 500.
    assert "recursion limit" in assert_envelope(deep, 422, "validation_error")["message"]
    assert assert_envelope(c.get("/v1/approvals", params={"limit": 0}), 403)  # agents may not list approvals
    assert assert_envelope(live.client("approver").get("/v1/approvals", params={"limit": 0}), 422)["field"] == "query.limit"


def test_request_size_limit(live: Live) -> None:
    c = live.client("agent")
    big = {"tool": "t", "arguments": {"blob": "x" * 1_100_000}}
    assert_envelope(c.post("/v1/decisions", json=big), 413, "payload_too_large")

    def chunks() -> Any:  # no Content-Length: the limit is enforced on what arrives
        for _ in range(40):
            yield b"x" * 50_000

    assert_envelope(c.post("/v1/decisions", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert decide(live, {"tool": "t"})["result"] == "allowed"  # the server is fine


def test_correlation_id_is_echoed(live: Live) -> None:
    r = live.client("agent").get("/v1/decisions/req_nope", headers={"X-Correlation-Id": "trace-abc.1"})
    assert r.headers["x-correlation-id"] == "trace-abc.1" and r.json()["error"]["correlation_id"] == "trace-abc.1"


# -- idempotency --------------------------------------------------------------------------------------
def test_a_retried_post_with_the_same_idempotency_key_decides_once(live: Live) -> None:
    c = live.client("agent")
    headers = {"Idempotency-Key": "retry-1"}
    first = c.post("/v1/decisions", json=REFUND, headers=headers)
    second = c.post("/v1/decisions", json=REFUND, headers=headers)
    assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
    with Engine(live.db) as eng:
        assert len(eng.audit_events(type="decision.made", limit=1000)) == 1
    other = c.post("/v1/decisions", json={**REFUND, "value": 1}, headers=headers)
    assert_envelope(other, 422, "idempotency_key_reused")
    # keys are per API key: another agent's identical key is its own request
    theirs = live.client("carol-agent").post("/v1/decisions", json=REFUND, headers=headers).json()
    assert theirs["request_id"] != first.json()["request_id"]
    # a refusal is not remembered: the same key works once the request is right
    assert live.client("approver").post("/v1/decisions", json=REFUND, headers={"Idempotency-Key": "k2"}).status_code == 403
    assert c.post("/v1/decisions", json=REFUND, headers={"Idempotency-Key": "k2"}).status_code == 200


def test_metrics(live: Live) -> None:
    decide(live, REFUND)
    decide(live, {"tool": "delete_account"})
    text = httpx.get(f"{live.url}/metrics").text
    assert 'clearance_decisions_total{result="requires_approval",rule="refunds"} 1.0' in text
    assert 'clearance_decisions_total{result="blocked",rule="never-delete"} 1.0' in text
    assert "clearance_approvals_pending 1.0" in text
    assert "clearance_decision_seconds_bucket" in text


def test_a_server_process_freezes_what_it_started_with_out_of_the_collectors_sight(tmp_path: Any) -> None:
    import gc

    from clearance.server import ServerThread

    before = gc.get_freeze_count()
    try:
        with ServerThread(tmp_path / "g.db", freeze_gc=True) as server:
            assert httpx.get(f"{server.url}/v1/health").status_code == 200
            assert gc.get_freeze_count() > before  # done in the lifespan, before the first request
    finally:
        gc.unfreeze()  # this is a test process, not a server's
