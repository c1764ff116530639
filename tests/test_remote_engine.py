"""RemoteEngine and AsyncRemoteEngine against a real server on loopback: the same answers and
the same exceptions as the embedded engine, retries that never decide twice, and a guard that
fails closed when the server is gone."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
from server_support import Live, free_port

from clearance import Engine, GuardedOpenAI, parse_rules
from clearance.errors import (
    AlreadyClaimed,
    ApprovalNotPending,
    ArgumentsMismatch,
    DuplicateVote,
    NotFound,
    RuleError,
    UnknownRequest,
)
from clearance.model import Approval, Decision, DecisionResult, Event, Execution, KillSwitch, Outcome
from clearance.remote import AsyncRemoteEngine, EngineUnavailable, RemoteEngine, RemoteError
from clearance.testing import ScriptedOpenAI, turn

REFUND = {"tool": "refund_payment", "arguments": {"order_id": "o1", "amount": 700}, "domain": "shop", "value": 700}


def remote(live: Live, who: str, **kw: Any) -> RemoteEngine:
    return RemoteEngine(live.url, live.tokens[who], **kw)


def test_the_whole_flow_returns_the_engine_types(live: Live) -> None:
    with remote(live, "agent") as agent, remote(live, "approver") as alice, remote(live, "admin") as admin:
        d = agent.evaluate(REFUND)
        assert isinstance(d, Decision) and d.result is DecisionResult.requires_approval and d.actor == "agent-7"
        assert agent.get_decision(d.request_id) == d
        assert agent.get_action(d.request_id).arguments == REFUND["arguments"]
        [pending] = alice.list_approvals()
        assert isinstance(pending, Approval) and pending.approval_id == d.approval_id
        assert alice.resolve_approval(d.approval_id, "approved", approver="alice", comment="ok").status.value == "approved"
        assert agent.wait_approval(d.approval_id, timeout_seconds=5).status.value == "approved"
        claim = agent.claim_execution(d.request_id, claimant="w", arguments=REFUND["arguments"])
        assert isinstance(claim, Execution) and claim.status.value == "unknown"
        [done, missing] = agent.record_executions([(d.request_id, "executed", {"id": 1}, None), ("req_x", "executed", None, None)])
        assert isinstance(done, Execution) and done.status.value == "executed"
        assert isinstance(missing, UnknownRequest) and missing.request_id == "req_x"
        assert agent.get_execution(d.request_id) == done
        out = agent.report_outcome(d.request_id, "succeeded", cost=1.5, event_id="o-1")
        assert isinstance(out, Outcome) and agent.report_outcome(d.request_id, "succeeded", cost=1.5, event_id="o-1") == out
        assert admin.outcomes(d.request_id) == [out]
        sw = admin.activate_kill_switch(tool="refund_payment", reason="drill")
        assert isinstance(sw, KillSwitch) and admin.kill_switches() == [sw]
        assert agent.evaluate(REFUND).result is DecisionResult.blocked
        assert admin.deactivate_kill_switch(tool="refund_payment") is True
        info = admin.apply_rules(parse_rules("rules:\n  - id: only\n    tool: x\n    effect: block\n"))
        assert info.version == 2 and admin.current_rules().policy_version == "2"
        assert [v["version"] for v in admin.policy_versions()] == [1, 2]
        events = admin.audit_events(request_id=d.request_id)
        assert all(isinstance(e, Event) for e in events) and events[0].type == "decision.made"
        assert admin.verify_audit().ok
    with Engine(live.db) as eng:  # what the remote engine answered is what the store holds
        assert eng.get_decision(d.request_id) == d
        assert eng.get_execution(d.request_id) == done


def test_refusals_are_the_engine_exceptions(live: Live) -> None:
    with remote(live, "agent") as agent, remote(live, "approver") as alice, remote(live, "approver2") as bob:
        with pytest.raises(UnknownRequest):
            agent.get_decision("req_nope")
        with pytest.raises(NotFound):
            alice.get_approval("apr_nope")
        wire = agent.evaluate({"tool": "wire_transfer", "value": 5})
        alice.resolve_approval(wire.approval_id, "approved", approver="alice")
        with pytest.raises(DuplicateVote):
            alice.resolve_approval(wire.approval_id, "approved", approver="alice")
        bob.resolve_approval(wire.approval_id, "rejected", approver="bob")
        with pytest.raises(ApprovalNotPending):
            alice.resolve_approval(wire.approval_id, "approved", approver="alice")
        d = agent.evaluate({"tool": "refund_payment", "value": 1, "arguments": {"a": 1}})
        with pytest.raises(ArgumentsMismatch):
            agent.claim_execution(d.request_id, claimant="w", arguments={"a": 2})
        agent.claim_execution(d.request_id, claimant="w", arguments={"a": 1})
        with pytest.raises(AlreadyClaimed):
            agent.claim_execution(d.request_id, claimant="w2")
        with pytest.raises(RemoteError) as refused:  # a role refusal is not an engine error
            agent.apply_rules(parse_rules("rules: []"))
        assert refused.value.status == 403 and refused.value.type == "forbidden"


def test_rule_errors_from_the_server_are_rule_errors(live: Live) -> None:
    import httpx

    r = httpx.put(f"{live.url}/v1/rules", json={"yaml": "rules:\n  - id: r\n    when: 'args.x >'\n"},
                  headers={"Authorization": f"Bearer {live.tokens['admin']}"})  # fmt: skip
    from clearance.remote import _error

    assert isinstance(_error(r.json(), r.status_code), RuleError)


def test_an_unreachable_server_raises_engine_unavailable() -> None:
    engine = RemoteEngine(f"http://127.0.0.1:{free_port()}", "clr_0000000000000000_x", retries=2, backoff_seconds=0.01)
    with pytest.raises(EngineUnavailable) as info:
        engine.evaluate(REFUND)
    assert "3 attempts" in str(info.value)
    engine.close()


def test_a_guard_on_an_unreachable_server_fails_closed() -> None:
    ran: list[Any] = []
    engine = RemoteEngine(f"http://127.0.0.1:{free_port()}", "clr_0000000000000000_x", retries=1, backoff_seconds=0.01)
    with ScriptedOpenAI([turn.function_call("refund_payment", {"order_id": "o", "amount": 1}), turn.text("ok")]) as server:
        guard = GuardedOpenAI(openai_api_key="t", base_url=server.base_url, engine=engine, actor="agent-7")

        def refund_payment(order_id: str, amount: float) -> str:
            ran.append(order_id)
            return "done"

        guard.tool("refund_payment", refund_payment)
        result = guard.run(messages=[{"role": "user", "content": "refund"}], model="gpt-4.1")
        guard.close()
    assert ran == []
    last = result["execution"]["last"]
    assert last["status"] == "blocked" and "failing closed" in last["decision"]["reason"]


class DroppingProxy:
    """A loopback HTTP proxy that forwards each request and, for the first ``drops`` of them,
    closes the connection instead of relaying the answer (the server did the work)."""

    def __init__(self, upstream: str, drops: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.drops = drops
        self.forwarded = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _read_message(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            rest += conn.recv(65536)
        return head + b"\r\n\r\n" + rest

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                request = self._read_message(conn)
                if not request:
                    return
                with socket.create_connection(self.upstream) as up:
                    up.sendall(request)
                    response = self._read_message(up)
                self.forwarded += 1
                if self.drops > 0:
                    self.drops -= 1
                    return  # the answer is lost on the way back
                conn.sendall(response)

    def close(self) -> None:
        self.sock.close()


def test_a_lost_answer_is_retried_with_its_idempotency_key_and_decided_once(live: Live) -> None:
    proxy = DroppingProxy(live.url, drops=2)
    try:
        with RemoteEngine(proxy.url, live.tokens["agent"], backoff_seconds=0.01) as agent:
            d = agent.evaluate(REFUND)
        assert proxy.forwarded >= 3  # the server saw the request at least three times
    finally:
        proxy.close()
    with Engine(live.db) as eng:
        made = eng.audit_events(type="decision.made", limit=100)
        assert [e.request_id for e in made] == [d.request_id]  # and decided once
        assert len(eng.list_approvals()) == 1


def test_a_lost_claim_is_retried_without_claiming_twice(live: Live) -> None:
    with remote(live, "agent") as agent:
        d = agent.evaluate({"tool": "refund_payment", "value": 1})
    proxy = DroppingProxy(live.url, drops=1)
    try:
        with RemoteEngine(proxy.url, live.tokens["agent"], backoff_seconds=0.01) as agent:
            claim = agent.claim_execution(d.request_id, claimant="worker")  # a second claim would be AlreadyClaimed
        assert claim.claimed_by == "worker" and proxy.forwarded >= 2
    finally:
        proxy.close()


def test_async_remote_engine(live: Live) -> None:
    async def main() -> None:
        async with AsyncRemoteEngine(live.url, live.tokens["agent"]) as agent, \
                AsyncRemoteEngine(live.url, live.tokens["approver"]) as alice:  # fmt: skip
            decisions = await asyncio.gather(*(agent.evaluate({**REFUND, "arguments": {"n": i}}) for i in range(5)))
            assert len({d.request_id for d in decisions}) == 5
            waiting = asyncio.ensure_future(agent.wait_approval(decisions[0].approval_id, timeout_seconds=30))
            await alice.resolve_approval(decisions[0].approval_id, "rejected", approver="alice")
            assert (await waiting).status.value == "rejected"
            assert len(await alice.list_approvals()) == 4
            with pytest.raises(UnknownRequest):
                await agent.get_decision("req_nope")
            assert (await agent.record_executions([(decisions[1].request_id, "not_run", None, None)]))[0].status.value == "not_run"

    asyncio.run(main())


def test_guard_with_an_agent_key_and_a_person_with_an_approver_key(live: Live) -> None:
    ledger: list[str] = []

    def refund_payment(order_id: str, amount: float) -> str:
        ledger.append(order_id)
        return "refunded"

    script = [turn.function_call("refund_payment", {"order_id": "o9", "amount": 900}), turn.text("Refunded o9.")]
    with ScriptedOpenAI(script) as server, remote(live, "agent") as agent, remote(live, "approver") as alice:
        guard = GuardedOpenAI(openai_api_key="t", base_url=server.base_url, engine=agent, actor="agent-7", domain="shop")
        guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
        first = guard.run(messages=[{"role": "user", "content": "refund o9"}], model="gpt-4.1")
        assert first["status"] == "approval_required" and ledger == []
        approval_id = first["pending_approvals"][0]["approval_id"]
        alice.resolve_approval(approval_id, "approved", approver="alice")
        resumed = guard.resume_after_approval(approval_id)
        guard.close()
    assert ledger == ["o9"] and resumed["output_text"] == "Refunded o9."
    with Engine(live.db) as eng:
        assert eng.get_approval(approval_id).resolved_by == "alice"
        assert eng.verify_audit().ok
