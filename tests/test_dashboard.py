"""The dashboard's guards, in process (httpx on the app, no browser): no page without a valid
session, no form without this session's CSRF token, no sign-in with an agent key, no answer to
one's own call, admin-only actions refused to approvers; and bad input answered in words."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_support import InProcessApp
from dashboard_support import RULES, csrf_of, seed, sign_in

from clearance import Engine, parse_rules
from clearance.server.dashboard import SESSION_COOKIE

URL = "https://clearance.test"  # the session cookie is Secure: sent over https only


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db = tmp_path_factory.mktemp("dash") / "dash.db"
    data = seed(db)
    engine = Engine(db)
    with InProcessApp(engine) as app:
        yield {**data, "app": app, "engine": engine}
    engine.close()


@contextmanager
def client(site: dict[str, Any], who: str | None = None) -> Iterator[httpx.Client]:
    """An https client on the app, signed in as ``who`` (a key made by the seed) when given."""
    with httpx.Client(transport=site["app"].transport(), base_url=URL) as c:
        if who is not None:
            assert sign_in(c, site["tokens"][who]).status_code == 303
        yield c


def pages(site: dict[str, Any]) -> list[tuple[str, str]]:
    """Every route of the dashboard but the login form and static files, with ids filled in."""
    from starlette.routing import Route

    fill = {"{approval_id}": site["waiting"][2], "{request_id}": site["blocked"], "{rule_id}": "refunds-cap",
            "{change:str}": "pause"}  # fmt: skip
    out = []
    for route in site["app"].app.router.routes:
        if isinstance(route, Route) and route.endpoint is site["app"].app.state.dashboard and route.path != "/login":
            path = route.path
            for k, v in fill.items():
                path = path.replace(k, v)
            out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_no_page_is_served_without_a_valid_session(site: dict[str, Any]) -> None:
    routes = pages(site)
    assert {("GET", "/"), ("GET", "/decisions"), ("GET", "/rules"), ("GET", "/kill-switch"), ("GET", "/learning"),
            ("GET", "/audit"), ("GET", "/audit/export"), ("GET", "/approvals/events"),
            ("POST", "/kill-switch/engage")} <= set(routes)  # fmt: skip
    with client(site) as anonymous, client(site) as forged:
        forged.cookies.set(SESSION_COOKIE, "eyJrZXlfaWQiOiAiMDAwIn0=.forged.signature", domain="clearance.test")
        for c in (anonymous, forged):
            for method, path in routes:
                r = c.request(method, path, headers={"Accept": "text/event-stream"} if path.endswith("/events") else {})
                if method == "GET" and not path.endswith("/events"):
                    assert (r.status_code, r.headers["location"].split("?")[0]) == (303, "/login"), path
                else:
                    assert r.status_code == 401, (method, path)
                assert site["waiting"][2] not in r.text and "refunds-cap" not in r.text
    assert site["engine"].get_approval(site["waiting"][2]).status.value == "pending"
    assert site["engine"].kill_switches() == []


def test_a_revoked_key_ends_its_session(site: dict[str, Any]) -> None:
    engine = site["engine"]
    key, token = engine.keys.create("temp", "approver", identity="temp")
    with client(site) as c:
        assert sign_in(c, token).status_code == 303
        assert c.get("/").status_code == 200
        engine.keys.revoke(key.key_id)
        assert c.get("/").status_code == 303


def test_the_session_cookie_is_http_only_secure_and_same_site(site: dict[str, Any]) -> None:
    with client(site) as c:
        r = sign_in(c, site["tokens"]["alice"])
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith(SESSION_COOKIE) and "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
        assert site["tokens"]["alice"] not in r.headers["set-cookie"]  # the key's id is kept, never its secret


def test_forms_without_a_valid_csrf_token_are_refused(site: dict[str, Any]) -> None:
    approval_id = site["waiting"][2]
    with client(site, "ops") as c:
        good = csrf_of(c.get("/").text)
        for form in ({}, {"csrf": "not-the-token"}, {"csrf": good[:-1]}):
            r = c.post(f"/approvals/{approval_id}/resolve", data={**form, "resolution": "approved"})
            assert r.status_code == 403 and "expired or did not come from this dashboard" in r.text
            assert c.post("/kill-switch/engage", data={**form, "scope": "all"}).status_code == 403
        assert site["engine"].get_approval(approval_id).status.value == "pending"
        assert site["engine"].kill_switches() == []
        # Another session's token does not do either.
        with client(site, "alice") as other:
            theirs = csrf_of(other.get("/").text)
        assert theirs != good
        assert c.post("/kill-switch/engage", data={"csrf": theirs, "scope": "all"}).status_code == 403
        # The sign-in form is protected too.
    with client(site) as fresh:
        r = fresh.post("/login", data={"key": site["tokens"]["alice"]})
        assert r.status_code == 403 and fresh.get("/").status_code == 303
    refused = [e.payload["reason"] for e in site["engine"].audit_events(type="auth.refused", limit=1000)]
    assert any("CSRF" in reason for reason in refused)


def test_an_agent_key_cannot_sign_in(site: dict[str, Any]) -> None:
    with client(site) as c:
        r = sign_in(c, site["tokens"]["agent"])
        assert r.status_code == 403 and "Agent keys cannot sign in" in r.text
        assert c.get("/").status_code == 303
        r = sign_in(c, "clr_0000000000000000_nope")
        assert r.status_code == 401 and "not valid" in r.text
    reasons = [e.payload["reason"] for e in site["engine"].audit_events(type="auth.refused", limit=1000)]
    assert "agent keys may not sign in to the dashboard" in reasons


def test_an_approver_cannot_answer_a_call_its_own_identity_made(site: dict[str, Any]) -> None:
    wire = site["wire"]  # made by agent-9; carol's approver key speaks for agent-9
    with client(site, "carol") as c:
        desk = c.get("/").text
        assert "You made this call (agent-9)" in desk
        r = c.post(f"/approvals/{wire}/resolve", data={"csrf": csrf_of(desk), "resolution": "approved"}, follow_redirects=True)
        assert "made this call and cannot approve it" in r.text
    approval = site["engine"].get_approval(wire)
    assert approval.status.value == "pending" and approval.votes == []


def test_an_approver_may_not_engage_the_kill_switch_or_pause_rules(site: dict[str, Any]) -> None:
    with client(site, "alice") as c:
        page = c.get("/kill-switch").text
        assert "Engage kill switch" not in page
        csrf = csrf_of(page)
        assert c.post("/kill-switch/engage", data={"csrf": csrf, "scope": "all"}).status_code == 403
        assert c.post("/rules/refunds-cap/pause", data={"csrf": csrf}).status_code == 403
    assert site["engine"].kill_switches() == []
    assert all(r.rule.status == "active" for r in site["engine"].current_rules().rules if r.id == "refunds-cap")


def test_bad_input_is_answered_in_words(site: dict[str, Any]) -> None:
    with client(site, "ops") as c:
        r = c.get("/decisions", params={"since": "yesterday", "result": "maybe"})
        assert r.status_code == 200 and "is not a date and time" in r.text and "is not one of" in r.text
        csrf = csrf_of(r.text)
        r = c.post("/rules/dry-run", data={"csrf": csrf, "rules": "rules: [{id: x, max_value: -1}]", "actions": "[]"})
        assert r.status_code == 422 and "max_value" in r.text and "Traceback" not in r.text
        r = c.post("/rules/dry-run", data={"csrf": csrf, "rules": "rules: []", "actions": "[{"})
        assert r.status_code == 422 and "not valid JSON" in r.text
        r = c.post("/rules/refunds-cap/remove", data={"csrf": csrf})
        assert r.status_code == 404
        assert c.get("/decisions/req_nope").status_code == 404
        r = c.post("/kill-switch/engage", data={"csrf": csrf, "scope": "tool"}, follow_redirects=True)
        assert "name the tool the switch covers" in r.text
    assert site["engine"].kill_switches() == []


def test_a_dry_run_decides_with_the_edited_rules_and_records_nothing(site: dict[str, Any]) -> None:
    engine = site["engine"]
    before = engine.audit_events(after_seq=0, limit=10_000)[-1].seq
    rules = "rules:\n  - id: tiny-cap\n    tool: refund_payment\n    max_value: 10\n"
    action = {"tool": "refund_payment", "domain": "payments", "actor": "agent-7", "value": 50}
    with client(site, "alice") as c:
        r = c.post("/rules/dry-run", data={"csrf": csrf_of(c.get("/rules").text), "rules": rules, "actions": json.dumps([action])})
    assert r.status_code == 200 and "tiny-cap" in r.text and ">blocked<" in r.text
    assert engine.audit_events(after_seq=0, limit=10_000)[-1].seq == before


def test_the_audit_export_holds_the_time_range_as_json_lines(site: dict[str, Any]) -> None:
    events = site["engine"].audit_events(limit=10_000)
    cut = events[len(events) // 2].created_at
    with client(site, "alice") as c:
        r = c.get("/audit/export", params={"since": cut.isoformat()})
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        assert lines and all(line["created_at"] >= cut.isoformat().replace("+00:00", "Z")[:19] for line in lines)
        assert [line["seq"] for line in lines] == [e.seq for e in events if e.created_at >= cut][: len(lines)]
        verified = c.get("/audit", params={"verify": "1"}).text
        assert "Intact" in verified


def test_the_learning_and_rules_pages_show_their_figures(site: dict[str, Any]) -> None:
    with client(site, "alice") as c:
        learning = c.get("/learning").text
        rules = c.get("/rules").text
    assert "<svg" in learning and "harmful" in learning and "Calibration" in learning
    assert "deploys-shadow" in rules and "Version 1" in rules
    # the shadow rule fired once (the prod deploy in the seed) and is counted
    assert ">1<" in rules.split("deploys-shadow", 1)[1].split("</tr>", 1)[0]


def test_the_api_still_answers_unknown_paths_itself(site: dict[str, Any]) -> None:
    with client(site) as c:
        r = c.get("/v1/no-such-thing")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
        assert c.get("/static/dashboard.css").status_code == 200


def test_path_of_next_stays_on_this_server(site: dict[str, Any]) -> None:
    with client(site) as c:
        r = c.post("/login?next=//evil.example/x", data={"key": site["tokens"]["alice"], "csrf": csrf_of(c.get("/login").text)})
        assert r.headers["location"] == "/"


def test_engine_lists_decisions_by_filter_and_page(site: dict[str, Any], tmp_path: Path) -> None:
    engine = site["engine"]
    every = engine.list_decisions(limit=1000)
    assert [d.decided_at for d in every] == sorted((d.decided_at for d in every), reverse=True)
    assert {d.result.value for d in engine.list_decisions(result="blocked")} == {"blocked"}
    assert [d.request_id for d in engine.list_decisions(rule="refunds-cap")] == [site["blocked"]]
    assert {d.actor for d in engine.list_decisions(actor="agent-9")} == {"agent-9"}
    first, second = engine.list_decisions(limit=3), engine.list_decisions(limit=3, before=engine.list_decisions(limit=3)[-1].request_id)
    assert [d.request_id for d in first + second] == [d.request_id for d in every[:6]]
    assert engine.list_decisions(since=every[0].decided_at) == [every[0]] or every[0] in engine.list_decisions(since=every[0].decided_at)
    assert every[0] not in engine.list_decisions(until=every[0].decided_at)
    from clearance.remote import RemoteEngine

    with RemoteEngine(site["app"].url, site["tokens"]["alice"], transport=site["app"].transport()) as remote:
        assert [d.request_id for d in remote.list_decisions(rule="refunds-cap", result="blocked")] == [site["blocked"]]
        # The ends of the calendar, with an offset that UTC cannot hold, are bounds like any other.
        since = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
        until = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))
        assert len(remote.list_decisions(since=since, until=until, limit=1000)) == len(every)
        assert len(remote.audit_events(since=since, until=until, limit=1000)) == len(engine.audit_events(limit=1000))


def test_serve_says_where_the_dashboard_is_and_how_to_make_the_first_admin_key(tmp_path: Path) -> None:
    from clearance.server.runner import announce

    with Engine(tmp_path / "new.db") as engine:
        first = announce(engine, "0.0.0.0", 8080, "new.db")
        engine.keys.create("ops", "admin")
        later = announce(engine, "127.0.0.1", 9000)
    assert "dashboard at http://127.0.0.1:8080/" in first
    assert "clearance --db new.db keys create NAME --role admin" in first
    assert "dashboard at http://127.0.0.1:9000/" in later and "keys create" not in later


def test_list_decisions_and_audit_time_ranges_on_postgresql(pg_url: str) -> None:
    with Engine(pg_url) as engine:
        engine.apply_rules(parse_rules(RULES))
        made = [engine.evaluate({"tool": "refund_payment", "domain": "payments", "actor": "agent-7", "value": v})
                for v in (20, 700, 9000)]  # fmt: skip
        newest = engine.list_decisions()
        assert [d.request_id for d in newest] == [d.request_id for d in reversed(made)]
        assert [d.request_id for d in engine.list_decisions(before=newest[0].request_id, limit=1)] == [made[1].request_id]
        assert [d.request_id for d in engine.list_decisions(rule="refunds-cap")] == [made[2].request_id]
        assert [d.result.value for d in engine.list_decisions(result="requires_approval", domain="payments")] == ["requires_approval"]
        since = made[1].decided_at
        assert {e.request_id for e in engine.audit_events(since=since, type="decision.made")} == {made[1].request_id, made[2].request_id}


def test_sign_in_guesses_are_throttled_like_the_apis(tmp_path: Path) -> None:
    """Failed sign-ins count towards the same per-address throttle as the API's keys."""
    from clearance.server.throttle import DEFAULT_PER_MINUTE

    engine = Engine(tmp_path / "throttle.db")
    with InProcessApp(engine) as app, httpx.Client(transport=app.transport(), base_url="https://localhost") as client:
        texts = [sign_in(client, f"clr_guess{i}_secret").text for i in range(DEFAULT_PER_MINUTE + 1)]
    assert "not valid" in texts[0]
    assert "Too many failed sign-ins" in texts[-1]
    engine.close()
