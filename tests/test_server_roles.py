"""The role matrix: every endpoint, with no key and with each role, against ``clearance serve``
running as its own process. Refused cells are 401/403 in the error envelope and audited;
allowed cells are never 401/403 (they may still be 404/409/422 for the ids used here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_support import RULES, assert_envelope, create_key_cli, start_process, stop_process

from clearance import Engine, parse_rules

PUBLIC = {"none", "agent", "approver", "admin"}
AGENT = {"agent", "admin"}
READ = {"agent", "approver", "admin"}
APPROVER = {"approver", "admin"}
ADMIN = {"admin"}
ROLES = ("none", "agent", "approver", "admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db = tmp_path_factory.mktemp("roles") / "roles.db"
    with Engine(db) as eng:
        eng.apply_rules(parse_rules(RULES))
    tokens = {"agent": create_key_cli(db, "bot", "agent", "agent-7"), "approver": create_key_cli(db, "alice", "approver"),
              "admin": create_key_cli(db, "ops", "admin")}  # fmt: skip
    # Every cell without a key is a failed authentication from this address: not what this tests.
    proc, url = start_process(db, env={"CLEARANCE_AUTH_FAILURES_PER_MINUTE": "100000"})
    try:
        h = {"Authorization": f"Bearer {tokens['agent']}"}
        d = httpx.post(f"{url}/v1/decisions", json={"tool": "refund_payment", "value": 700}, headers=h).json()
        yield {"url": url, "db": db, "tokens": tokens, "rid": d["request_id"], "aid": d["approval_id"]}
    finally:
        stop_process(proc)


def matrix(rid: str, aid: str) -> list[tuple[str, str, Any, set[str]]]:
    """(method, path, json body, roles allowed) for every operation in the OpenAPI document."""
    act = {"tool": "search", "arguments": {"q": "x"}}
    rule = {"id": "matrix-rule", "tool": "matrix_tool", "max_value": 5}
    return [
        ("GET", "/metrics", None, PUBLIC),
        ("GET", "/v1/health", None, PUBLIC),
        ("GET", "/v1/ready", None, PUBLIC),
        ("POST", "/v1/decisions", act, AGENT),
        ("POST", "/v1/decisions/batch", {"actions": [act]}, AGENT),
        ("GET", "/v1/decisions?tool=refund_payment", None, APPROVER),
        ("GET", f"/v1/decisions/{rid}", None, READ),
        ("GET", f"/v1/decisions/{rid}/action", None, READ),
        ("GET", f"/v1/decisions/{rid}/precedents", None, READ),
        ("POST", f"/v1/decisions/{rid}/claim", {"claimant": "x"}, AGENT),
        ("POST", f"/v1/decisions/{rid}/execution", {"status": "not_run"}, AGENT),
        ("GET", f"/v1/decisions/{rid}/execution", None, READ),
        ("POST", "/v1/executions/batch", {"reports": [{"request_id": rid, "status": "not_run"}]}, AGENT),
        ("POST", f"/v1/decisions/{rid}/outcomes", {"status": "succeeded", "event_id": "m1"}, AGENT),
        ("GET", f"/v1/decisions/{rid}/outcomes", None, READ),
        ("POST", "/v1/outcomes/batch", {"outcomes": [{"request_id": rid, "status": "succeeded", "event_id": "m1"}]}, AGENT),
        ("GET", "/v1/approvals", None, APPROVER),
        ("GET", f"/v1/approvals/{aid}", None, READ),
        ("GET", f"/v1/approvals/{aid}/wait?timeout_seconds=0", None, READ),
        ("POST", f"/v1/approvals/{aid}/resolve", {"resolution": "rejected"}, APPROVER),
        ("POST", "/v1/approvals/expire", None, ADMIN),
        ("GET", "/v1/rules", None, APPROVER),
        ("PUT", "/v1/rules", {"yaml": RULES}, ADMIN),
        ("POST", "/v1/rules", rule, ADMIN),
        ("POST", "/v1/rules/validate", {"yaml": RULES}, APPROVER),
        ("GET", "/v1/rules/versions", None, APPROVER),
        ("GET", "/v1/rules/versions/1", None, APPROVER),
        ("POST", "/v1/rules/dry-run", {"actions": [act]}, APPROVER),
        ("POST", "/v1/rules/backtest", {"yaml": RULES}, APPROVER),
        ("GET", "/v1/rules/refunds/evidence", None, APPROVER),
        ("POST", "/v1/rules/refunds/promote", {"force": True}, ADMIN),
        ("GET", "/v1/rules/refunds", None, APPROVER),
        ("PUT", "/v1/rules/matrix-rule", rule, ADMIN),
        ("POST", "/v1/rules/matrix-rule/pause", None, ADMIN),
        ("POST", "/v1/rules/matrix-rule/resume", None, ADMIN),
        ("DELETE", "/v1/rules/matrix-rule", None, ADMIN),
        ("GET", "/v1/kill-switches", None, APPROVER),
        ("POST", "/v1/kill-switches", {"tool": "matrix_tool"}, ADMIN),
        ("POST", "/v1/kill-switches/deactivate", {"tool": "matrix_tool"}, ADMIN),
        ("GET", "/v1/audit/events", None, APPROVER),
        ("GET", "/v1/audit/verify", None, APPROVER),
        ("POST", "/v1/audit/checkpoints", None, ADMIN),
        ("GET", "/v1/learning/report", None, APPROVER),
        ("POST", "/v1/proposals/refused", {"tool": "nope", "reason": "no such tool"}, AGENT),
        ("PUT", "/v1/runs/run_matrix", {"state": {"trace_id": "trc_m"}, "approval_ids": []}, AGENT),
        ("POST", "/v1/runs/take", {"approval_id": aid, "wait_seconds": 0}, AGENT),
        ("POST", "/v1/runs/run_matrix/release", None, AGENT),
        ("GET", "/v1/whoami", None, READ),
        ("GET", "/v1/keys", None, ADMIN),
        ("POST", "/v1/keys", {"name": "matrix", "role": "agent"}, ADMIN),
        ("POST", "/v1/keys/0000000000000000/revoke", None, ADMIN),
    ]


def _template(path: str, rid: str, aid: str) -> str:
    path = path.split("?")[0].replace(rid, "{request_id}").replace(aid, "{approval_id}")
    for concrete, name in (("/v1/rules/versions/1", "/v1/rules/versions/{version}"), ("/v1/runs/run_matrix", "/v1/runs/{run_id}"),
                           ("/v1/keys/0000000000000000", "/v1/keys/{key_id}")):  # fmt: skip
        path = path.replace(concrete, name)
    for rule_id in ("refunds", "matrix-rule"):
        path = path.replace(f"/v1/rules/{rule_id}", "/v1/rules/{rule_id}")
    return path


def test_the_matrix_covers_every_operation(server: dict[str, Any]) -> None:
    doc = httpx.get(f"{server['url']}/v1/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    covered = {(m, _template(p, server["rid"], server["aid"])) for m, p, _, _ in matrix(server["rid"], server["aid"])}
    assert covered == documented


def test_role_matrix(server: dict[str, Any]) -> None:
    url, tokens = server["url"], server["tokens"]
    refused, cells = 0, []
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body, allowed in matrix(server["rid"], server["aid"]):
            for role in ROLES:
                headers = {"Authorization": f"Bearer {tokens[role]}"} if role != "none" else {}
                r = client.request(method, path, json=body, headers=headers)
                assert r.status_code < 500, (method, path, role, r.text)
                if role in allowed:
                    assert r.status_code not in (401, 403), (method, path, role, r.text)
                else:
                    expected = 401 if role == "none" else 403
                    assert_envelope(r, expected, "unauthorized" if expected == 401 else "forbidden")
                    refused += 1
                cells.append((method, path, role, r.status_code))
    assert refused == sum(len(set(ROLES) - allowed) for *_, allowed in matrix(server["rid"], server["aid"]))
    with Engine(server["db"]) as eng:
        audited = eng.audit_events(type="auth.refused", limit=1000)
        assert len(audited) == refused
        assert {e.payload["status"] for e in audited} == {401, 403}
        assert eng.verify_audit().ok
