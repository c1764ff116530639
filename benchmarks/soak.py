"""Soak: a ``clearance serve`` process under steady mixed traffic for a long time.

Starts ``clearance serve`` on a fresh SQLite file (or ``--db``, a path or a database URL) and
starts ``--rate`` flows a second for ``--minutes``, each flow a few requests as an agent and
its approvers make them: an allowed refund decided, claimed, recorded and given an outcome; a
large one held for approval, approved or rejected by a person, then run if approved; a blocked
call; reads of a decision and of the approvals queue. Samples the server's resident memory
(Linux ``/proc``) throughout. Prints progress, then one JSON line: ``rss_growth_pct`` (the last
quarter's median against the median just after warm-up), ``errors`` (any answer but the one
expected, or no answer), ``p99_ms`` of all requests, the counts, and ``rss_mb_by_minute`` (the
median of each minute: growth that levels off is warm-up, growth that goes on is a leak).

    python benchmarks/soak.py [--minutes 10] [--rate 20]

The reliability suite runs the same traffic for a few seconds (tests/reliability/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RULES = """
version: 1
rules:
  - id: refunds
    tool: refund_payment
    max_value: 5000
    require_approval_above: 500
  - id: no-deletes
    tool: delete_account
    effect: block
"""

AGENT = "agent-soak"
IN_FLIGHT = 32  # flows at once, at most (and connections per client)


@dataclass
class Soak:
    """What a soak saw."""

    flows: int = 0
    requests: int = 0
    errors: int = 0
    answers_5xx: int = 0
    latencies: list[float] = field(default_factory=list)
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # from the first flow started to the last one done

    def summary(self, warmup: float) -> dict[str, Any]:
        after = [kb for t, kb in self.rss_kb if t >= warmup] or [kb for _, kb in self.rss_kb]
        start = statistics.median(after[: max(1, len(after) // 4)]) if after else 0
        end = statistics.median(after[-max(1, len(after) // 4):]) if after else 0
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000 if ordered else float("nan")
        minutes: dict[int, list[int]] = {}
        for t, kb in self.rss_kb:
            minutes.setdefault(int(t // 60), []).append(kb)
        by_minute = [round(statistics.median(kbs) / 1024, 1) for _, kbs in sorted(minutes.items())]
        return {"flows": self.flows, "requests": self.requests, "errors": self.errors, "answers_5xx": self.answers_5xx,
                "rate_achieved": round(self.flows / self.seconds, 2) if self.seconds else None,
                "p99_ms": round(p99, 2), "rss_start_mb": round(start / 1024, 1), "rss_end_mb": round(end / 1024, 1),
                "rss_growth_pct": round((end / start - 1) * 100, 2) if start else None, "rss_mb_by_minute": by_minute,
                "problems": dict(self.problems.most_common(5))}  # fmt: skip


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def make_keys(db: str) -> dict[str, str]:
    """Apply the soak's rules to ``db`` and make its keys: an agent and an approver."""
    from clearance import Engine, parse_rules

    with Engine(db) as engine:
        engine.apply_rules(parse_rules(RULES))
        return {"agent": engine.keys.create("soak-agent", "agent", identity=AGENT)[1],
                "approver": engine.keys.create("soak-approver", "approver", identity="soak-approver")[1]}  # fmt: skip


async def _flow(i: int, agent: httpx.AsyncClient, approver: httpx.AsyncClient, soak: Soak) -> None:
    async def call(client: httpx.AsyncClient, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        started = time.perf_counter()
        try:
            answer = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            soak.requests += 1
            soak.errors += 1
            soak.problems[f"{method} {path.split('/')[2]}: {type(exc).__name__}"] += 1
            return None
        soak.latencies.append(time.perf_counter() - started)
        soak.requests += 1
        soak.answers_5xx += answer.status_code >= 500
        if answer.status_code != expect:
            soak.errors += 1
            soak.problems[f"{method} {path.split('/')[2]}: {answer.status_code}"] += 1
            return None
        return answer.json()

    kind = i % 10
    soak.flows += 1
    if kind <= 5:  # allowed: decide, claim, run, record, and now and then an outcome
        d = await call(agent, "POST", "/v1/decisions", {"tool": "refund_payment", "actor": AGENT, "domain": "shop",
                       "value": 10 + i % 90, "arguments": {"order_id": f"ord_{i}", "amount": 10 + i % 90}})  # fmt: skip
        if d and d["allowed"] and await call(agent, "POST", f"/v1/decisions/{d['request_id']}/claim", {"claimant": AGENT}):
            await call(agent, "POST", f"/v1/decisions/{d['request_id']}/execution", {"status": "executed", "result_summary": {"ok": True}})
            if kind % 2 == 0:
                status = "succeeded" if i % 7 else "reverted"
                await call(agent, "POST", f"/v1/decisions/{d['request_id']}/outcomes", {"status": status, "event_id": f"o-{i}"})
    elif kind <= 7:  # held: a person answers, and an approved call runs
        d = await call(agent, "POST", "/v1/decisions", {"tool": "refund_payment", "actor": AGENT, "domain": "shop",
                       "value": 900, "arguments": {"order_id": f"ord_{i}", "amount": 900}})  # fmt: skip
        if d and d["requires_approval"]:
            verdict = "approved" if kind == 6 else "rejected"
            if await call(approver, "POST", f"/v1/approvals/{d['approval_id']}/resolve", {"resolution": verdict, "comment": "soak"}):
                if verdict == "approved" and await call(agent, "POST", f"/v1/decisions/{d['request_id']}/claim", {"claimant": AGENT}):
                    await call(agent, "POST", f"/v1/decisions/{d['request_id']}/execution", {"status": "executed"})
    elif kind == 8:  # blocked
        await call(agent, "POST", "/v1/decisions", {"tool": "delete_account", "actor": AGENT, "arguments": {"user": f"u{i}"}})
    else:  # reads
        d = await call(agent, "POST", "/v1/decisions", {"tool": "lookup_order", "actor": AGENT, "arguments": {"order_id": f"ord_{i}"}})
        if d:
            await call(agent, "GET", f"/v1/decisions/{d['request_id']}")
        await call(approver, "GET", "/v1/approvals?limit=20")


async def _drive(url: str, keys: dict[str, str], seconds: float, rate: float, pid: int | None, soak: Soak,
                 progress: float) -> None:  # fmt: skip
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {keys['agent']}"}, timeout=30,
                                 limits=limits) as agent, \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {keys['approver']}"}, timeout=30,
                              limits=limits) as approver:  # fmt: skip
        start = time.perf_counter()
        next_sample = next_report = start
        tasks: set[asyncio.Task[None]] = set()
        # At most as many flows in flight as connections: a server that falls behind slows the
        # start of new flows (the achieved rate says so) instead of queueing thousands of them in
        # the client, whose connection pool then spends its time on the queue, not the server.
        slots = asyncio.Semaphore(IN_FLIGHT)
        total = int(seconds * rate)
        for i in range(total):
            scheduled = start + i / rate
            now = time.perf_counter()
            if now >= next_sample and pid is not None:
                kb = rss_kb(pid)
                if kb is not None:
                    soak.rss_kb.append((now - start, kb))
                next_sample = now + 0.5
            if progress and now >= next_report:
                print(f"{now - start:7.0f} s  flows {soak.flows}  requests {soak.requests}  errors {soak.errors}  "
                      f"rss {soak.rss_kb[-1][1] / 1024 if soak.rss_kb else 0:.1f} MB", flush=True)
                next_report = now + progress
            if scheduled > now:
                await asyncio.sleep(scheduled - now)
            await slots.acquire()
            task = asyncio.ensure_future(_flow(i, agent, approver, soak))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda _: slots.release())
        await asyncio.gather(*tasks)
        soak.seconds = time.perf_counter() - start
        if pid is not None and (kb := rss_kb(pid)) is not None:
            soak.rss_kb.append((time.perf_counter() - start, kb))


def drive(url: str, keys: dict[str, str], seconds: float, rate: float = 20.0, pid: int | None = None,
          progress: float = 0.0) -> Soak:  # fmt: skip
    """Steady mixed traffic against the server at ``url`` for ``seconds`` (``rate`` flows a
    second), sampling the resident memory of process ``pid``."""
    soak = Soak()
    asyncio.run(_drive(url, keys, seconds, rate, pid, soak, progress))
    return soak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=20.0, help="flows started per second (each 1-5 requests)")
    ap.add_argument("--db", default=None, help="a SQLite file or a database URL (default: a fresh temporary file)")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from server import free_port, start_server

    tmp = tempfile.TemporaryDirectory(prefix="clearance-soak-")
    db = args.db or str(Path(tmp.name) / "soak.db")
    keys = make_keys(db)
    port = free_port()
    server = start_server(db, port, 1)  # type: ignore[arg-type]
    seconds = args.minutes * 60
    try:
        soak = drive(f"http://127.0.0.1:{port}", keys, seconds, args.rate, server.pid, progress=max(5.0, seconds / 20))
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp.cleanup()
    result = soak.summary(warmup=min(60.0, seconds / 5))
    print(json.dumps({"minutes": args.minutes, "rate": args.rate, **result}))


if __name__ == "__main__":
    main()
