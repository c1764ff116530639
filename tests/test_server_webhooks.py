"""Outbound approval webhooks against a real receiver on loopback (``http.server`` in a thread):
signed, retried on 5xx/429/connection errors with backoff, final on other 4xx, and sent exactly
once per event across a restart, two app instances on one SQLite file, two worker processes,
and two app instances on PostgreSQL. Backoffs are configured short so the tests stay fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import RULES, free_port, make_keys, stop_process
from sqlalchemy import select
from standardwebhooks import Webhook

from clearance import Engine, parse_rules
from clearance.server import ServerThread
from clearance.server.webhooks import WebhookSettings
from clearance.signing import WebhookSignatureError, verify
from clearance.store import schema as t

SECRET = "whsec_dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="  # the standard form: whsec_ + base64 key
PLAIN = "a plain shared secret"  # any other string: its UTF-8 bytes are the key
REFUND = {"tool": "refund_payment", "arguments": {"order_id": "o1"}, "domain": "shop", "value": 700}


# -- the receiver -------------------------------------------------------------------------------
@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def delivery(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """Records every request; answers per path from a script of statuses, one per attempt of
    the same delivery (the last one repeats). ``/ok`` (and any unscripted path) answers 200."""

    scripts: dict[str, list[int | tuple[int, dict[str, str]]]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    delay: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with receiver.lock:
                    n = sum(h.path == hit.path and h.delivery == hit.delivery for h in receiver.hits)
                    receiver.hits.append(hit)
                time.sleep(receiver.delay.get(self.path, 0.0))
                script = receiver.scripts.get(self.path) or [200]
                answer = script[min(n, len(script) - 1)]
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def on(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def ok_on(self, path: str) -> list[Hit]:
        """Hits on ``path`` that its script answered with a 2xx."""
        out, seen = [], {}  # type: ignore[var-annotated]
        for h in self.on(path):
            n = seen[h.delivery] = seen.get(h.delivery, -1) + 1
            script = self.scripts.get(path) or [200]
            answer = script[min(n, len(script) - 1)]
            if 200 <= (answer[0] if isinstance(answer, tuple) else answer) < 300:
                out.append(h)
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def settings(*urls: str, **kw: Any) -> WebhookSettings:
    fast: dict[str, Any] = {"backoff_seconds": 0.02, "max_backoff_seconds": 0.1, "poll_seconds": 0.05,
                            "timeout_seconds": 3.0, "shutdown_grace_seconds": 2.0}  # fmt: skip
    return WebhookSettings(urls=urls, secret=SECRET, **{**fast, **kw})


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def new_engine(location: str | Path) -> Engine:
    engine = Engine(location)
    engine.apply_rules(parse_rules(RULES))
    return engine


def deliveries(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.store.read() as tx:
        return {r["delivery_id"]: dict(r) for r in tx.conn.execute(select(t.webhook_deliveries)).mappings()}


def assert_signed(hit: Hit, secret: str = SECRET) -> None:
    """The request verifies with our helper and with the Standard Webhooks library itself (which
    takes a plain secret as its bytes)."""
    assert verify(secret, hit.body, hit.headers) == hit.json
    assert Webhook(secret if secret.startswith("whsec_") else secret.encode()).verify(hit.body, hit.headers) == hit.json


def by_event(hits: list[Hit]) -> dict[tuple[str, str], list[Hit]]:
    out: dict[tuple[str, str], list[Hit]] = {}
    for h in hits:
        out.setdefault((h.json["approval"]["approval_id"], h.headers["clearance-event"]), []).append(h)
    return out


# -- delivery, retries, signature -----------------------------------------------------------------
def test_delivered_after_two_500s_signed_and_with_the_approval(tmp_path: Path, receiver: Receiver) -> None:
    receiver.scripts["/flaky"] = [500, 500, 200]
    engine = new_engine(tmp_path / "wh.db")
    tokens = make_keys(engine)
    with ServerThread(engine, webhooks=settings(f"{receiver.url}/flaky")) as server:
        agent = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['agent']}"})
        approver = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['approver']}"})
        decision = agent.post("/v1/decisions", json=REFUND).json()
        aid = decision["approval_id"]
        assert aid and decision["result"] == "requires_approval"

        wait_for(lambda: len(receiver.on("/flaky")) >= 3, what="three attempts of approval.requested")
        tries = receiver.on("/flaky")[:3]
        assert {h.delivery for h in tries} == {tries[0].delivery}  # one delivery, three attempts
        assert [h.headers["clearance-attempt"] for h in tries] == ["1", "2", "3"]
        for h in tries:
            assert h.headers["clearance-event"] == "approval.requested"
            assert h.headers["content-type"] == "application/json"
            assert_signed(h)
            assert not {"clearance-signature", "clearance-delivery"} & set(h.headers)  # one scheme, not two
            assert h.body == tries[0].body  # every retry sends the same bytes
        body = tries[0].json
        assert body["id"] == tries[0].delivery and body["type"] == "approval.requested"
        a = body["approval"]
        assert (a["approval_id"], a["request_id"], a["tool"], a["actor"], a["status"]) == \
            (aid, decision["request_id"], "refund_payment", "agent-7", "pending")  # fmt: skip
        assert a["value"] == 700 and a["arguments"] == {"order_id": "o1"} and a["resolved_by"] is None

        r = approver.post(f"/v1/approvals/{aid}/resolve", json={"resolution": "approved", "comment": "fine"})
        assert r.status_code == 200, r.text
        resolved = wait_for(lambda: [h for h in receiver.ok_on("/flaky") if h.headers["clearance-event"] == "approval.resolved"],
                            what="approval.resolved")  # fmt: skip
        a = resolved[0].json["approval"]
        assert (a["approval_id"], a["request_id"], a["status"], a["resolved_by"], a["comment"]) == \
            (aid, decision["request_id"], "approved", "alice", "fine")  # fmt: skip
        assert_signed(resolved[0])
        with pytest.raises(WebhookSignatureError, match="altered"):
            verify(SECRET, resolved[0].body.replace(b"approved", b"rejected"), resolved[0].headers)
        with pytest.raises(WebhookSignatureError, match="wrong secret"):
            verify("not-the-secret", resolved[0].body, resolved[0].headers)
        with pytest.raises(WebhookSignatureError, match="no webhook-signature header"):
            verify(SECRET, resolved[0].body, {k: v for k, v in resolved[0].headers.items() if k != "webhook-signature"})

        rows = deliveries(engine)
        assert rows[tries[0].delivery]["state"] == "delivered" and rows[tries[0].delivery]["attempts"] == 3
        assert rows[tries[0].delivery]["last_status"] == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'clearance_webhook_deliveries_total{event="approval.requested",outcome="retry"} 2.0' in metrics
        assert 'clearance_webhook_deliveries_total{event="approval.requested",outcome="delivered"} 1.0' in metrics
        assert "clearance_webhook_backlog 0.0" in metrics
        agent.close()
        approver.close()
    engine.close()


def test_an_approval_requested_on_the_hot_path_is_sent_at_once_not_at_the_next_poll(tmp_path: Path,
                                                                                     receiver: Receiver) -> None:  # fmt: skip
    engine = new_engine(tmp_path / "now.db")
    tokens = make_keys(engine)
    with ServerThread(engine, webhooks=settings(f"{receiver.url}/now", poll_seconds=30.0)) as server:
        agent = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tokens['agent']}"})
        time.sleep(0.3)  # the sender's first look (at start) is over: the next poll is 30 s away
        decision = agent.post("/v1/decisions", json=REFUND, headers={"Idempotency-Key": "now-1"}).json()
        assert decision["result"] == "requires_approval"
        hit = wait_for(lambda: receiver.on("/now"), timeout=10.0, what="approval.requested well before the next poll")
        assert hit[0].json["approval"]["approval_id"] == decision["approval_id"]
        agent.close()
    engine.close()


def test_a_400_is_final_and_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.scripts["/bad"] = [400]
    engine = new_engine(tmp_path / "wh.db")
    with ServerThread(engine, webhooks=settings(f"{receiver.url}/bad", f"{receiver.url}/ok")):
        engine.evaluate(REFUND)
        wait_for(lambda: receiver.on("/bad") and receiver.on("/ok"), what="both endpoints to be called")
        time.sleep(0.6)  # a dozen polls and backoffs: a retry would have come by now
        assert len(receiver.on("/bad")) == 1
        bad = [r for r in deliveries(engine).values() if r["url"].endswith("/bad")]
        assert [(r["state"], r["attempts"], r["last_status"]) for r in bad] == [("failed", 1, 400)]
        ok = [r for r in deliveries(engine).values() if r["url"].endswith("/ok")]
        assert [(r["state"], r["attempts"]) for r in ok] == [("delivered", 1)]
    engine.close()


def test_retry_after_is_honoured_and_attempts_are_capped(tmp_path: Path, receiver: Receiver) -> None:
    receiver.scripts["/limited"] = [(429, {"Retry-After": "1"}), 200]
    receiver.scripts["/down"] = [503]
    closed = f"http://127.0.0.1:{free_port()}/nobody-listens"
    engine = new_engine(tmp_path / "wh.db")
    hooks = settings(f"{receiver.url}/limited", f"{receiver.url}/down", closed, max_attempts=3)
    with ServerThread(engine, webhooks=hooks):
        engine.evaluate(REFUND)
        wait_for(lambda: len(receiver.on("/limited")) == 2, what="the retry after the 429")
        first, second = receiver.on("/limited")
        assert second.at - first.at >= 0.9  # Retry-After: 1, although the backoff is 0.02 s
        wait_for(lambda: all(r["state"] != "pending" for r in deliveries(engine).values()), what="all deliveries to end")
        time.sleep(0.3)
        assert len(receiver.on("/down")) == 3  # max_attempts, then given up
        rows = {r["url"]: r for r in deliveries(engine).values()}
        assert (rows[f"{receiver.url}/down"]["state"], rows[f"{receiver.url}/down"]["attempts"]) == ("failed", 3)
        assert rows[f"{receiver.url}/down"]["last_status"] == 503
        assert (rows[closed]["state"], rows[closed]["attempts"], rows[closed]["last_status"]) == ("failed", 3, None)
        assert "ConnectError" in rows[closed]["last_error"]
        assert rows[f"{receiver.url}/limited"]["state"] == "delivered"
    engine.close()


def test_an_expired_approval_is_sent_as_approval_expired(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "wh.db"
    with Engine(db, default_approval_ttl=timedelta(seconds=0.3)) as eng:
        eng.apply_rules(parse_rules(RULES))
        with ServerThread(db, webhooks=settings(f"{receiver.url}/ok")):
            d = eng.evaluate(REFUND)
            time.sleep(0.4)
            assert [a.approval_id for a in eng.expire_approvals()] == [d.approval_id]
            hits = wait_for(lambda: by_event(receiver.ok_on("/ok")).get((d.approval_id, "approval.expired")),
                            what="approval.expired")  # fmt: skip
    a = hits[0].json["approval"]
    assert (a["status"], a["request_id"], a["tool"]) == ("expired", d.request_id, "refund_payment")
    assert a["resolved_at"] == hits[0].json["created_at"]


# -- exactly once ---------------------------------------------------------------------------------
def assert_exactly_once(receiver: Receiver, path: str, expected: set[tuple[str, str]]) -> None:
    got = by_event(receiver.ok_on(path))
    assert set(got) == expected
    assert {k: len(v) for k, v in got.items() if len(v) != 1} == {}
    hits = receiver.on(path)
    assert len({h.delivery for h in hits}) == len(expected)


def test_exactly_once_across_a_restart_and_nothing_lost_while_down(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "wh.db"
    new_engine(db).close()
    hook = settings(f"{receiver.url}/ok")
    with ServerThread(db, webhooks=hook):
        with Engine(db) as eng:
            a = eng.evaluate(REFUND)
        wait_for(lambda: receiver.ok_on("/ok"), what="approval.requested of a")
    with Engine(db) as eng:  # while no server runs: these must not be lost
        b = eng.evaluate(REFUND)
        eng.resolve_approval(a.approval_id, "rejected", approver="alice")
    with ServerThread(db, webhooks=hook):
        expected = {(a.approval_id, "approval.requested"), (a.approval_id, "approval.resolved"),
                    (b.approval_id, "approval.requested")}  # fmt: skip
        wait_for(lambda: set(by_event(receiver.ok_on("/ok"))) >= expected, what="the events made while down")
        time.sleep(0.4)
    with ServerThread(db, webhooks=hook):  # a third start finds nothing left to send
        time.sleep(0.4)
    assert_exactly_once(receiver, "/ok", expected)
    resolved = by_event(receiver.ok_on("/ok"))[(a.approval_id, "approval.resolved")][0].json["approval"]
    assert (resolved["status"], resolved["resolved_by"]) == ("rejected", "alice")


def test_a_delivery_cut_short_by_shutdown_is_sent_again_with_the_same_id(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay["/slow"] = 2.0
    receiver.scripts["/slow"] = [200]
    db = tmp_path / "wh.db"
    new_engine(db).close()
    with ServerThread(db, webhooks=settings(f"{receiver.url}/slow", shutdown_grace_seconds=0.1)):
        with Engine(db) as eng:
            eng.evaluate(REFUND)
        wait_for(lambda: receiver.on("/slow"), what="the first attempt to arrive")
    with Engine(db) as eng:
        (row,) = deliveries(eng).values()
        assert (row["state"], row["attempts"], row["lease_until"]) == ("pending", 0, None)  # released, not lost
    receiver.delay["/slow"] = 0.0
    with ServerThread(db, webhooks=settings(f"{receiver.url}/slow")):
        wait_for(lambda: len(receiver.on("/slow")) == 2, what="the delivery to be sent again")
        first, again = receiver.on("/slow")
        assert first.delivery == again.delivery and first.body == again.body  # receivers can drop the repeat
        with Engine(db) as eng:
            wait_for(lambda: next(iter(deliveries(eng).values()))["state"] == "delivered", what="delivered")


def test_two_app_instances_on_one_sqlite_file_deliver_each_event_once(tmp_path: Path, receiver: Receiver) -> None:
    receiver.scripts["/flaky"] = [500, 200]
    db = tmp_path / "wh.db"
    new_engine(db).close()
    hook = settings(f"{receiver.url}/ok", f"{receiver.url}/flaky")
    with ServerThread(db, webhooks=hook), ServerThread(db, webhooks=hook), Engine(db) as eng:
        made = [eng.evaluate(REFUND) for _ in range(8)]
        for d in made[:4]:
            eng.resolve_approval(d.approval_id, "approved", approver="alice")
        expected = {(d.approval_id, "approval.requested") for d in made} | \
            {(d.approval_id, "approval.resolved") for d in made[:4]}  # fmt: skip
        for path in ("/ok", "/flaky"):
            wait_for(lambda p=path: set(by_event(receiver.ok_on(p))) >= expected, what=f"every event on {path}")
        time.sleep(0.4)
    assert_exactly_once(receiver, "/ok", expected)
    assert_exactly_once(receiver, "/flaky", expected)
    assert len(receiver.on("/flaky")) == 2 * len(expected)  # each failed once, then once more


def test_clearance_serve_with_two_workers_and_webhook_options(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "wh.db"
    new_engine(db).close()
    port = free_port()
    env = {**os.environ, "CLEARANCE_DB": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "clearance", "serve", "--port", str(port), "--log-level", "warning",
                             "--workers", "2", "--webhook-url", f"{receiver.url}/ok", "--webhook-secret", PLAIN],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/v1/health"), timeout=60, what="clearance serve to answer")
        with Engine(db) as eng:
            made = [eng.evaluate(REFUND) for _ in range(5)]
            eng.resolve_approval(made[0].approval_id, "approved", approver="alice")
        expected = {(d.approval_id, "approval.requested") for d in made} | {(made[0].approval_id, "approval.resolved")}
        wait_for(lambda: set(by_event(receiver.ok_on("/ok"))) >= expected, timeout=30, what="every event")
        time.sleep(1.5)  # both workers poll about once a second
        assert_exactly_once(receiver, "/ok", expected)
        for h in receiver.on("/ok"):
            assert_signed(h, PLAIN)
    finally:
        stop_process(proc)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# -- configuration --------------------------------------------------------------------------------
def test_settings_from_the_environment_and_their_errors() -> None:
    env = {"CLEARANCE_WEBHOOK_URLS": "http://a.example/hook, https://b.example/x,,", "CLEARANCE_WEBHOOK_SECRET": "s"}
    got = WebhookSettings.resolve(environ=env)
    assert got is not None and got.urls == ("http://a.example/hook", "https://b.example/x") and got.secret == "s"
    explicit = WebhookSettings.resolve(["http://c.example/"], "t", environ=env)  # options win over the environment
    assert explicit is not None and explicit.urls == ("http://c.example/",) and explicit.secret == "t"
    assert WebhookSettings.resolve(environ={}) is None
    with pytest.raises(ValueError, match="secret"):
        WebhookSettings.resolve(["http://c.example/"], environ={})
    with pytest.raises(ValueError, match="http"):
        WebhookSettings.resolve(["ftp://c.example/"], "t", environ={})


def test_serve_refuses_a_webhook_url_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_WEBHOOK")}
    res = subprocess.run([sys.executable, "-m", "clearance", "--db", str(tmp_path / "x.db"), "serve", "--webhook-url",
                          "http://127.0.0.1:9/hook"], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert res.returncode != 0
    assert "secret" in res.stderr and "Traceback" not in res.stderr


# -- PostgreSQL -----------------------------------------------------------------------------------
def test_two_app_instances_on_postgresql_deliver_each_event_once(pg_url: str, receiver: Receiver) -> None:
    receiver.scripts["/flaky"] = [500, 500, 200]
    new_engine(pg_url).close()
    hook = settings(f"{receiver.url}/ok", f"{receiver.url}/flaky")
    with ServerThread(pg_url, webhooks=hook), ServerThread(pg_url, webhooks=hook), Engine(pg_url) as eng:
        made = [eng.evaluate(REFUND) for _ in range(6)]
        for d in made[:3]:
            eng.resolve_approval(d.approval_id, "rejected", approver="alice")
        eng.activate_kill_switch(tool="other_tool", reason="noise: not an approval event")
        expected = {(d.approval_id, "approval.requested") for d in made} | \
            {(d.approval_id, "approval.resolved") for d in made[:3]}  # fmt: skip
        for path in ("/ok", "/flaky"):
            wait_for(lambda p=path: set(by_event(receiver.ok_on(p))) >= expected, what=f"every event on {path}")
        time.sleep(0.4)
        rows = deliveries(eng)
    assert_exactly_once(receiver, "/ok", expected)
    assert_exactly_once(receiver, "/flaky", expected)
    assert len(receiver.on("/flaky")) == 3 * len(expected)
    assert {r["state"] for r in rows.values()} == {"delivered"} and len(rows) == 2 * len(expected)
    sample = by_event(receiver.ok_on("/ok"))[(made[0].approval_id, "approval.resolved")][0]
    assert_signed(sample)
    assert sample.json["approval"]["status"] == "rejected" and sample.json["approval"]["actor"] == made[0].actor


def test_a_drift_alert_is_sent_as_drift_detected(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "wh.db"
    with Engine(db) as eng:
        with ServerThread(db, webhooks=settings(f"{receiver.url}/ok")):
            statuses = ["succeeded"] * 40 + ["harmful"] * 20
            for status in statuses:
                d = eng.evaluate({"tool": "wire", "arguments": {}, "actor": "agent-3", "domain": "treasury"})
                eng.report_outcome(d.request_id, status)
            hits = wait_for(lambda: [h for h in receiver.ok_on("/ok") if h.json["type"] == "drift.detected"] or None,
                            what="drift.detected")  # fmt: skip
            wait_for(lambda: len([h for h in receiver.ok_on("/ok") if h.json["type"] == "drift.detected"]) == 3,
                     what="one alert per stream")  # fmt: skip
    alerts = {(h.json["drift"]["scope"], h.json["drift"]["value"]) for h in receiver.ok_on("/ok")
              if h.json["type"] == "drift.detected"}  # fmt: skip
    assert alerts == {("tool", "wire"), ("actor", "agent-3"), ("domain", "treasury")}
    assert hits[0].headers.get("clearance-event") == "drift.detected" and hits[0].json["drift"]["baseline_rate"] < 0.05
