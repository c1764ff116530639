"""Races across processes and across servers on one store: of concurrent claims of one call and
concurrent resolutions of one approval exactly one wins, and a rate limit of 10 lets exactly 10
of many concurrent calls through. Two ``clearance serve`` processes share the store; separately,
forked processes each hold their own embedded engine on it. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from counts import Counts, scaled
from workers import RULES

from clearance import Engine, parse_rules

pytestmark = pytest.mark.reliability

THREADS = 20
APPROVERS = 8


def prepare(db: str, rounds: int) -> dict[str, str]:
    """The rules and the keys: one agent, ``APPROVERS`` approvers, and one pinger per round."""
    with Engine(db) as engine:
        engine.apply_rules(parse_rules(RULES))
        keys = {"agent": engine.keys.create("agent", "agent", identity="agent-k")[1]}
        keys |= {f"approver-{i}": engine.keys.create(f"approver-{i}", "approver", identity=f"approver-{i}")[1]
                 for i in range(APPROVERS)}  # fmt: skip
        keys |= {f"pinger-{r}": engine.keys.create(f"pinger-{r}", "agent", identity=f"pinger-{r}")[1] for r in range(rounds)}
    return keys


def together(n: int, attempt: Any) -> list[Any]:
    """``attempt(i)`` for i in range(n), released at once from ``n`` threads."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def race_servers(db: str, forks: Any, tmp: Path, record: Counts) -> None:
    rounds = scaled(1)
    keys = prepare(db, rounds)
    servers = forks.serve_many(db, tmp / "serve.log", 2)
    clients = {(who, n): httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
               for who, token in keys.items() for n, (_, url) in enumerate(servers)}  # fmt: skip
    try:
        statuses: Counter[int] = Counter()
        for r in range(rounds):
            agent = clients["agent", 0]
            ok = agent.post("/v1/decisions", json={"tool": "refund", "actor": "agent-k", "value": 20, "arguments": {"r": r}}).json()
            held = agent.post("/v1/decisions", json={"tool": "refund", "actor": "agent-k", "value": 900, "arguments": {"r": r}}).json()
            assert ok["allowed"] and held["requires_approval"], (ok, held)

            def attempt(i: int) -> tuple[int, int, int]:
                claim = clients["agent", i % 2].post(f"/v1/decisions/{ok['request_id']}/claim", json={"claimant": "agent-k"})
                verdict = "approved" if i % 2 else "rejected"
                resolve = clients[f"approver-{i % APPROVERS}", (i // 2) % 2].post(
                    f"/v1/approvals/{held['approval_id']}/resolve", json={"resolution": verdict})
                ping = clients[f"pinger-{r}", i % 2].post("/v1/decisions", json={"tool": "ping", "actor": f"pinger-{r}",
                                                                                  "arguments": {"i": i}})  # fmt: skip
                return claim.status_code, resolve.status_code, ping.json()["allowed"] if ping.status_code == 200 else ping.status_code

            results = together(THREADS, attempt)
            claims, resolutions, pings = (Counter(x[k] for x in results) for k in range(3))
            statuses.update(claims)
            statuses.update(resolutions)
            record.add(runs=1, requests=len(results) * 3, double_executions=max(0, claims[200] - 1),
                       errors=abs(resolutions[200] - 1) + abs(pings[True] - 10),
                       answers_5xx=sum(n for c, n in (claims + resolutions).items() if c >= 500))  # fmt: skip
            assert claims == {200: 1, 409: THREADS - 1}, claims
            assert resolutions == {200: 1, 409: THREADS - 1}, resolutions
            assert pings == {True: 10, False: THREADS - 10}, pings
        with Engine(db) as engine:
            assert engine.verify_audit().ok
    finally:
        for c in clients.values():
            c.close()
        for pid, _ in servers:
            forks.kill(pid)


def race_processes(db: str, forks: Any, tmp: Path, record: Counts) -> None:
    rounds, workers = scaled(2), 4
    for r in range(rounds):
        with Engine(db) as engine:
            if r == 0:
                engine.apply_rules(parse_rules(RULES))
            ok = engine.evaluate({"tool": "refund", "actor": "bot", "value": 20, "arguments": {"r": r}})
            held = engine.evaluate({"tool": "refund", "actor": "bot", "value": 900, "arguments": {"r": r}})
        start_at = time.time() + 0.6  # every worker has opened its engine by then
        outs = [tmp / f"race-{r}-{w}.log" for w in range(workers)]
        pids = [forks.start("race", out, db=db, start_at=start_at, request_id=ok.request_id, approval_id=held.approval_id,
                            pings=8, pinger=f"process-pinger-{r}", who=f"worker-{w}") for w, out in enumerate(outs)]  # fmt: skip
        codes = [forks.wait(pid) for pid in pids]
        assert codes == [0] * workers, [Path(f"{o}.err").read_text() for o in outs]
        results = [json.loads(o.read_text()) for o in outs]
        claimed = sum(x["claimed"] for x in results)
        resolved = sum(x["resolved"] for x in results)
        allowed = sum(x["allowed"] for x in results)
        record.add(runs=1, requests=workers * 10, double_executions=max(0, claimed - 1),
                   errors=abs(resolved - 1) + abs(allowed - 10))  # fmt: skip
        assert (claimed, resolved, allowed) == (1, 1, 10), results
    with Engine(db) as engine:
        assert engine.verify_audit().ok


@pytest.mark.parametrize("across", ["servers", "processes"])
def test_races_on_sqlite(across: str, forks: Any, tmp_path: Path, record: Counts) -> None:
    record.area, record.backend = f"races across {across}", "SQLite"
    (race_servers if across == "servers" else race_processes)(str(tmp_path / "raced.db"), forks, tmp_path, record)


@pytest.mark.parametrize("across", ["servers", "processes"])
def test_races_on_postgresql(across: str, pg_url: str, forks: Any, tmp_path: Path, record: Counts) -> None:
    record.area, record.backend = f"races across {across}", "PostgreSQL"
    (race_servers if across == "servers" else race_processes)(pg_url, forks, tmp_path, record)
