"""Hostile HTTP input: huge bodies, deep nesting, odd encodings, NUL and control characters,
over-long fields, bad JSON, wrong content types, hostile paths, queries and headers, and raw
bytes that are not HTTP at all, sent to every route that takes a body. Never a 5xx, never a
stack trace in a body, every refusal in the API's error envelope; afterwards the server still
decides and the audit chain verifies. On SQLite and PostgreSQL (whose text and JSON types refuse
NUL and lone surrogates that SQLite keeps).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from counts import Counts, scaled
from server_support import RULES, make_keys

from clearance import Engine, parse_rules
from clearance.server import ServerThread

pytestmark = pytest.mark.reliability

DEPTH = 100_000
HUGE = 2_000_000  # bytes; the default body limit is 1 MB


def _nested(depth: int, open_: str, close: str) -> bytes:
    return b'{"tool": "refund_payment", "actor": "agent-7", "domain": "shop", "arguments": {"x": ' + \
        open_.encode() * depth + close.encode() * depth + b"}}"  # fmt: skip


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    """``(name, body, content type)``: each one sent to every route that takes a body."""
    ok = {"tool": "refund_payment", "actor": "agent-7", "domain": "shop", "arguments": {"amount": 10}}

    def j(value: Any, **kw: Any) -> bytes:
        return json.dumps(value, **kw).encode()

    def with_(**fields: Any) -> bytes:
        return j({**ok, **fields})

    ct = "application/json"
    return [
        ("a valid run", j({"state": {"step": 1}, "approval_ids": []}), ct),
        ("huge body", with_(arguments={"x": "a" * HUGE}), ct),
        ("deep arrays", _nested(DEPTH, "[", "]"), ct),
        ("deep objects", _nested(DEPTH, '{"a":', "}"), ct),
        ("nested 1000", _nested(1000, "[", "]"), ct),
        ("utf-16", json.dumps(ok).encode("utf-16"), "application/json; charset=utf-16"),
        ("utf-8 bom", b"\xef\xbb\xbf" + j(ok), ct),
        ("invalid utf-8", b'{"tool": "refund_\xff\xfe", "actor": "agent-7"}', ct),
        ("overlong utf-8", b'{"tool": "\xc0\xaf\xe0\x80\xaf"}', ct),
        ("latin-1 declared", '{"tool": "r\xe9fund"}'.encode("latin-1"), "application/json; charset=latin-1"),
        ("unknown charset", j(ok), "application/json; charset=klingon"),
        ("lone surrogate", b'{"tool": "refund_payment", "actor": "agent-7", "domain": "shop", "arguments": {"x": "\\ud800"}}', ct),
        ("lone surrogate in tool", b'{"tool": "refund\\udfff", "actor": "agent-7"}', ct),
        ("NUL in tool", with_(tool="refund\x00payment"), ct),
        ("NUL in actor", with_(actor="agent-7\x00"), ct),
        ("NUL in argument value", with_(arguments={"note": "a\x00b"}), ct),
        ("NUL in argument key", with_(arguments={"no\x00te": 1}), ct),
        ("NUL in strings everywhere", j({"claimant": "w\x00", "status": "executed", "error": "e\x00", "resolution": "approved",
                                        "comment": "c\x00", "description": "d\x00", "reason": "r\x00", "tool": "t\x00",
                                        "state": {"k\x00": "v\x00"}, "approval_ids": ["a\x00"]}), ct),  # fmt: skip
        ("escape codes", with_(tool="\x1b[32mharmless_lookup\x1b[0m", actor="agent-7"), ct),
        ("control characters", with_(domain="sh\x07\x08op", target="\r\n\t"), ct),
        ("bidi override", with_(tool="refund\u202epayment"), ct),
        ("tool of 300 chars", with_(tool="t" * 300), ct),
        ("actor of 100k chars", with_(actor="a" * 100_000), ct),
        ("trace id of 100k chars", with_(trace_id="t" * 100_000), ct),
        ("argument key of 100k chars", with_(arguments={"k" * 100_000: 1}), ct),
        ("900 kB argument", with_(arguments={"blob": "b" * 900_000}), ct),
        ("100k arguments", with_(arguments={f"k{i}": i for i in range(100_000)}), ct),
        ("truncated JSON", b'{"tool": "refund_payment", "arguments": {', ct),
        ("empty body", b"", ct),
        ("null", b"null", ct),
        ("array", b"[1, 2, 3]", ct),
        ("string", b'"refund_payment"', ct),
        ("NaN", b'{"tool": "refund_payment", "value": NaN, "severity": NaN, "cost": NaN}', ct),
        ("Infinity", b'{"tool": "refund_payment", "value": Infinity, "cost": -Infinity}', ct),
        ("1e999", b'{"tool": "refund_payment", "value": 1e999, "severity": 1e999, "wait_seconds": 1e999}', ct),
        ("huge integer", b'{"tool": "refund_payment", "value": 1' + b"0" * 5000 + b"}", ct),
        ("negative value", with_(value=-1e308), ct),
        ("duplicate keys", b'{"tool": "refund_payment", "tool": "delete_account", "actor": "agent-7"}', ct),
        ("trailing garbage", j(ok) + b"}}}garbage", ct),
        ("wrong types", j({"tool": 1, "actor": [], "domain": {}, "value": "x", "arguments": "x", "status": 7,
                           "resolution": True, "claimant": None, "state": [], "approval_ids": "x", "actions": {}}), ct),  # fmt: skip
        ("bad datetime", j({"status": "succeeded", "observed_at": "2025-13-45T99:99:99+99:00"}), ct),
        ("text/plain", j(ok), "text/plain"),
        ("form", b"tool=refund_payment&actor=agent-7", "application/x-www-form-urlencoded"),
        ("multipart", b"--x\r\nContent-Disposition: form-data; name=\"tool\"\r\n\r\nrefund\r\n--x--\r\n",
         "multipart/form-data; boundary=x"),  # fmt: skip
        ("xml", b"<tool>refund_payment</tool>", "application/xml"),
        ("no content type", j(ok), ""),
        ("binary", bytes(range(256)) * 40, "application/octet-stream"),
    ]


def body_routes(rid: str, aid: str) -> list[tuple[str, str, str]]:
    """``(method, path, key)``: every route that takes a body, with a real request and approval."""
    return [("POST", "/v1/decisions", "agent"), ("POST", "/v1/decisions/batch", "agent"),
            ("POST", "/v1/proposals/refused", "agent"), ("POST", f"/v1/decisions/{rid}/claim", "agent"),
            ("POST", f"/v1/decisions/{rid}/execution", "agent"), ("POST", "/v1/executions/batch", "agent"),
            ("POST", f"/v1/decisions/{rid}/outcomes", "agent"), ("POST", f"/v1/approvals/{aid}/resolve", "approver"),
            ("PUT", "/v1/runs/run-1", "agent"), ("POST", "/v1/runs/take", "agent"), ("PUT", "/v1/rules", "admin"),
            ("POST", "/v1/kill-switches", "admin"), ("POST", "/v1/kill-switches/deactivate", "admin"),
            ("PUT", "/v1/runs/%00", "agent"), ("PUT", "/v1/runs/" + "r" * 100, "agent"), ("POST", "/v1/runs/%00/release", "agent"),
            ("POST", "/v1/decisions/%00/claim", "agent"), ("POST", "/v1/approvals/%00%1b/resolve", "approver")]  # fmt: skip


def hostile_gets() -> list[tuple[str, str, dict[str, str]]]:
    """``(path, key, headers)``: hostile paths, queries and headers."""
    return [("/v1/decisions/%00", "agent", {}), ("/v1/decisions/" + "x" * 10_000, "agent", {}),
            ("/v1/decisions/%ff%fe%00/action", "agent", {}), ("/v1/decisions/..%2f..%2fetc%2fpasswd", "agent", {}),
            ("/v1/approvals/%1b[31m", "approver", {}), ("/v1/approvals?status=bogus&limit=-1", "approver", {}),
            ("/v1/approvals?limit=" + "9" * 40, "approver", {}), ("/v1/audit/events?limit=abc&after=%00", "approver", {}),
            ("/v1/audit/events?type=" + "t" * 100_000, "approver", {}),
            ("/v1/audit/events?type=%00&request_id=%00&trace_id=%00", "approver", {}),
            ("/v1/audit/events?request_id=" + "r" * 1000, "approver", {}),
            ("/v1/approvals/x/wait?timeout_seconds=1e999", "approver", {}),
            ("/v1/approvals/x/wait?timeout_seconds=NaN", "approver", {}),
            ("/v1/decisions/\u202e\u0000", "agent", {}),
            ("/v1/decisions/x", "agent", {"Accept": "application/xml"}),
            ("/v1/decisions/x", "", {"Authorization": "Bearer " + "k" * 20_000}),
            ("/v1/decisions/x", "", {"Authorization": "Basic \xff\xfe"}),
            ("/v1/decisions/x", "", {"Authorization": "Bearer clr_\x7f\x01"}),
            ("/v1/decisions/x", "agent", {"Idempotency-Key": "k" * 10_000}),
            ("/v1/decisions/x", "agent", {"X-Correlation-Id": "\x1b[31m" + "c" * 5000})]  # fmt: skip


#: Not HTTP, or HTTP that lies about its own framing.
RAW = [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\n"
       b"Content-Length: -1\r\n\r\n", b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
       b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 200_000 + b"\r\n\r\n",
       b"GET /v1/health\x00 HTTP/1.1\r\nHost: x\r\n\r\n"]  # fmt: skip


#: uvicorn's own answer to a request it cannot parse as HTTP (control characters in a header
#: value...): the app never sees such a request, so it has no envelope to give.
PROTOCOL_REFUSAL = "Invalid HTTP request received."


class Tally:
    def __init__(self, record: Counts) -> None:
        self.record = record
        self.bad: list[str] = []

    def send(self, client: httpx.Client, what: str, method: str, path: str, **kw: Any) -> None:
        try:
            response = client.request(method, path, **kw)
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            return  # httpx itself refuses to send it: nothing reached the server
        except httpx.TransportError as exc:
            self.record.add(requests=1)
            self.bad.append(f"{what}: the connection dropped ({exc!r})")
            return
        self.check(what, response)

    def check(self, what: str, response: httpx.Response) -> None:
        text = response.text
        self.record.add(requests=1, answers_5xx=response.status_code >= 500)
        if response.status_code >= 500:
            self.bad.append(f"{what}: {response.status_code} {text[:300]}")
        elif "Traceback" in text or 'File "' in text:
            self.bad.append(f"{what}: a stack trace in the body: {text[:300]}")
        elif response.status_code >= 400 and text != PROTOCOL_REFUSAL:
            try:
                assert set(response.json()) == {"error"}
            except (ValueError, AssertionError):
                self.bad.append(f"{what}: {response.status_code} without the error envelope: {text[:300]}")


def raw_exchange(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close on us mid-send: that is an answer too
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def barrage(url: str, tokens: dict[str, str], engine: Engine, record: Counts) -> None:
    tally = Tally(record)
    clients = {who: httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {tokens[who]}"} if who else {})
               for who in ("agent", "approver", "admin", "")}  # fmt: skip
    try:
        ok = clients["agent"].post("/v1/decisions", json={"tool": "refund_payment", "actor": "agent-7", "domain": "shop",
                                                          "value": 10, "arguments": {"amount": 10}}).json()  # fmt: skip
        held = clients["agent"].post("/v1/decisions", json={"tool": "refund_payment", "actor": "agent-7", "domain": "shop",
                                                            "value": 900, "arguments": {"amount": 900}}).json()  # fmt: skip
        bodies = hostile_bodies()
        for _ in range(scaled(1)):
            for i, (method, path, who) in enumerate(body_routes(ok["request_id"], held["approval_id"])):
                for name, body, ctype in bodies:
                    if len(body) > 100_000 and i % 3:  # the body limit comes before any route: a third of them will do
                        continue
                    headers = {"Content-Type": ctype} if ctype else {}
                    tally.send(clients[who], f"{method} {path} <- {name}", method, path, content=body, headers=headers)
                if i % 3 == 0:
                    tally.send(clients[who], f"{method} {path} <- huge chunked body", method, path,
                               content=iter([b'{"x": "', b"a" * HUGE, b'"}']), headers={"Content-Type": "application/json"})
            for path, who, headers in hostile_gets():
                try:
                    request = clients[who].build_request("GET", path, headers=headers)
                except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                    continue  # httpx itself refuses to build it: nothing could reach the server
                tally.send(clients[who], f"GET {path[:60]} {list(headers)}", "GET", path, headers=headers)
            for data in RAW:
                answer = raw_exchange(url, data)
                record.add(requests=1)
                status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b""
                if status.startswith(b"5") or b"Traceback" in answer:
                    record.add(answers_5xx=status.startswith(b"5"))
                    tally.bad.append(f"raw {data[:40]!r}: {answer[:300]!r}")
        # the server is still whole: it answers, decides, and the chain holds
        assert clients[""].get("/v1/health").status_code == 200
        after = clients["agent"].post("/v1/decisions", json={"tool": "refund_payment", "actor": "agent-7", "domain": "shop",
                                                             "value": 20, "arguments": {"amount": 20}})  # fmt: skip
        assert after.status_code == 200 and after.json()["allowed"], after.text
        verify = clients["approver"].get("/v1/audit/verify").json()
        assert verify["ok"], verify
    finally:
        for c in clients.values():
            c.close()
    record.add(runs=1)
    assert not tally.bad, "\n".join(tally.bad)


@pytest.fixture(params=["SQLite", "PostgreSQL"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Engine]]:
    db = tmp_path / "hostile.db" if request.param == "SQLite" else request.getfixturevalue("pg_url")
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    tokens = make_keys(engine)
    with ServerThread(engine) as running:
        yield running.url, tokens, engine
    engine.close()


def test_hostile_http_input(server: tuple[str, dict[str, str], Engine], record: Counts, request: pytest.FixtureRequest) -> None:
    record.area, record.backend = "hostile HTTP input", request.node.callspec.params["server"]
    url, tokens, engine = server
    barrage(url, tokens, engine, record)
