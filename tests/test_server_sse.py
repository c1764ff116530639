"""``GET /v1/approvals/{id}/wait`` as Server-Sent Events (``Accept: text/event-stream``), against a
real server on loopback: heartbeats while pending, one ``resolved`` or ``timeout`` event, then
the end of the stream; the same auth answers as the JSON long-poll, which stays the default."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import RULES, assert_envelope, make_keys

from clearance import Engine, parse_rules
from clearance.server import ServerThread

REFUND = {"tool": "refund_payment", "arguments": {"order_id": "o1"}, "domain": "shop", "value": 700}
SSE = {"Accept": "text/event-stream"}


@dataclass
class Srv:
    url: str
    db: Path
    tokens: dict[str, str]
    app: Any

    def headers(self, who: str | None, **extra: str) -> dict[str, str]:
        return {**({"Authorization": f"Bearer {self.tokens[who]}"} if who else {}), **extra}

    def decide(self, who: str = "agent") -> dict[str, Any]:
        r = httpx.post(f"{self.url}/v1/decisions", json=REFUND, headers=self.headers(who))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Srv]:
    db = tmp_path / "sse.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    tokens = make_keys(engine)
    server = ServerThread(engine).start()
    server.app.state.sse_heartbeat_seconds = 0.2  # the default is 5 s; short so the test sees several
    yield Srv(server.url, db, tokens, server.app)
    server.stop()
    engine.close()


def events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse a text/event-stream as it arrives: (event name, JSON data) per event."""
    kind, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def test_stream_sends_heartbeats_then_the_resolution_and_ends(srv: Srv) -> None:
    d = srv.decide()
    aid = d["approval_id"]
    got: list[tuple[str, dict[str, Any], float]] = []
    with httpx.Client(timeout=30) as client, client.stream("GET", f"{srv.url}/v1/approvals/{aid}/wait",
                                                           params={"timeout_seconds": 60},
                                                           headers=srv.headers("agent", **SSE)) as r:  # fmt: skip
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        resolver = None
        for kind, data in events(r):
            got.append((kind, data, time.monotonic()))
            waiting = [g for g in got if g[0] == "waiting"]
            if len(waiting) == 3 and resolver is None:  # resolve while the stream is open, from another client
                def resolve() -> None:
                    res = httpx.post(f"{srv.url}/v1/approvals/{aid}/resolve", headers=srv.headers("approver"),
                                     json={"resolution": "approved", "comment": "ok"})  # fmt: skip
                    assert res.status_code == 200, res.text

                resolver = threading.Thread(target=resolve)
                resolver.start()
        # the for loop ends only because the server ended the stream
    assert resolver is not None
    resolver.join(timeout=10)
    kinds = [k for k, _, _ in got]
    assert kinds[:3] == ["waiting"] * 3 and kinds[-1] == "resolved" and set(kinds[:-1]) == {"waiting"}
    assert all(data["status"] == "pending" and data["approval_id"] == aid for k, data, _ in got if k == "waiting")
    beats = [at for k, _, at in got if k == "waiting"]
    assert 0.1 < beats[1] - beats[0] < 2.0  # heartbeats are periodic, not a busy loop
    final = got[-1][1]
    assert (final["approval_id"], final["request_id"], final["status"], final["resolved_by"], final["comment"]) == \
        (aid, d["request_id"], "approved", "alice", "ok")  # fmt: skip


def test_stream_times_out_with_the_approval_still_pending(srv: Srv) -> None:
    aid = srv.decide()["approval_id"]
    started = time.monotonic()
    with httpx.stream("GET", f"{srv.url}/v1/approvals/{aid}/wait", params={"timeout_seconds": 0.5},
                      headers=srv.headers("approver", **SSE), timeout=30) as r:  # fmt: skip
        got = list(events(r))
    assert 0.4 < time.monotonic() - started < 10
    assert [k for k, _ in got][-1] == "timeout" and {k for k, _ in got[:-1]} == {"waiting"}
    assert got[-1][1]["status"] == "pending" and got[-1][1]["approval_id"] == aid


def test_a_resolution_made_outside_the_server_ends_the_stream(srv: Srv) -> None:
    aid = srv.decide()["approval_id"]
    with httpx.stream("GET", f"{srv.url}/v1/approvals/{aid}/wait", params={"timeout_seconds": 60},
                      headers=srv.headers("agent", **SSE), timeout=30) as r:  # fmt: skip
        stream = events(r)
        assert next(stream)[0] == "waiting"
        with Engine(srv.db) as other:  # e.g. `clearance approvals reject` against the same store
            other.resolve_approval(aid, "rejected", approver="bob", comment="no")
        rest = list(stream)
    assert rest[-1][0] == "resolved" and rest[-1][1]["status"] == "rejected" and rest[-1][1]["resolved_by"] == "bob"


def test_a_client_that_hangs_up_leaves_no_waiter_behind(srv: Srv) -> None:
    aid = srv.decide()["approval_id"]
    with httpx.stream("GET", f"{srv.url}/v1/approvals/{aid}/wait", params={"timeout_seconds": 60},
                      headers=srv.headers("agent", **SSE), timeout=30) as r:  # fmt: skip
        stream = events(r)  # kept: a discarded parser would close the response, i.e. hang up early
        assert next(stream)[0] == "waiting"
        assert aid in srv.app.state.approval_waiters
    deadline = time.monotonic() + 10  # the server notices at its next heartbeat (0.2 s here)
    while aid in srv.app.state.approval_waiters and time.monotonic() < deadline:
        time.sleep(0.02)
    assert aid not in srv.app.state.approval_waiters


def test_an_already_resolved_approval_streams_one_event(srv: Srv) -> None:
    aid = srv.decide()["approval_id"]
    httpx.post(f"{srv.url}/v1/approvals/{aid}/resolve", headers=srv.headers("approver"), json={"resolution": "rejected"})
    with httpx.stream("GET", f"{srv.url}/v1/approvals/{aid}/wait", headers=srv.headers("agent", **SSE), timeout=30) as r:
        got = list(events(r))
    assert [(k, d["status"]) for k, d in got] == [("resolved", "rejected")]


def test_auth_and_errors_are_the_same_envelopes_as_for_json(srv: Srv) -> None:
    aid = srv.decide()["approval_id"]
    carol = srv.decide(who="carol-agent")["approval_id"]
    path = f"{srv.url}/v1/approvals/{{}}/wait"
    assert_envelope(httpx.get(path.format(aid), headers=SSE), 401, "unauthorized")
    assert_envelope(httpx.get(path.format(aid), headers={**SSE, "Authorization": "Bearer clr_nope"}), 401, "unauthorized")
    # an agent key reads only its own identity's approvals
    assert_envelope(httpx.get(path.format(carol), headers=srv.headers("agent", **SSE)), 403, "forbidden")
    assert_envelope(httpx.get(path.format("apr_nope"), headers=srv.headers("agent", **SSE)), 404, "not_found")
    assert_envelope(httpx.get(path.format(aid), params={"timeout_seconds": 301}, headers=srv.headers("agent", **SSE)),
                    422, "validation_error")  # fmt: skip
    with Engine(srv.db) as eng:
        refused = eng.audit_events(type="auth.refused", limit=100)
    assert len(refused) == 3


def test_json_stays_the_default(srv: Srv) -> None:
    aid = srv.decide()["approval_id"]
    for accept in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        r = httpx.get(f"{srv.url}/v1/approvals/{aid}/wait", params={"timeout_seconds": 0.1},
                      headers=srv.headers("agent", **accept))  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json()["status"] == "pending" and r.json()["approval_id"] == aid


def test_the_openapi_document_describes_the_event_stream(srv: Srv) -> None:
    doc = httpx.get(f"{srv.url}/v1/openapi.json").json()
    ok = doc["paths"]["/v1/approvals/{approval_id}/wait"]["get"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/Approval"}
    assert ok["text/event-stream"]["schema"]["type"] == "string"
    assert "event: resolved" in ok["text/event-stream"]["example"]
