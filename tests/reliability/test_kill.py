"""SIGKILL at random points: a process deciding, claiming and recording executions in a loop is
killed at a random moment, again and again on the same store; then every decision it
acknowledged is in the store, no call was claimed twice, and the audit chain verifies.

Embedded: the killed process holds the engine itself. Server: a real ``clearance serve`` process
is killed under a client's traffic, and the next round's server starts on the same store. The
kill comes at a random moment after the first whole call (decided, claimed, recorded) went
through, so each round has something to lose. Both on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from counts import Counts, scaled
from workers import RULES, action

from clearance import Engine, parse_rules
from clearance.errors import ConflictError, NotFound

pytestmark = pytest.mark.reliability


class Acks:
    """What the killed processes acknowledged, over all rounds."""

    def __init__(self) -> None:
        self.decided: dict[str, str] = {}  # request_id -> result
        self.claimed: set[str] = set()
        self.executed: set[str] = set()

    def read(self, lines: list[str]) -> None:
        for line in lines:
            word, *rest = line.split()
            if word == "ack":
                self.decided[rest[0]] = rest[1]
            elif word == "claimed":
                self.claimed.add(rest[0])
            elif word == "executed":
                self.executed.add(rest[0])


def prepare(db: str) -> None:
    with Engine(db) as engine:
        engine.apply_rules(parse_rules(RULES))


def check(db: str, acks: Acks, record: Counts) -> None:
    """Every acknowledged decision, claim and execution is there; no call claimed twice, none
    claimable again; the chain verifies."""
    lost = []
    with Engine(db) as engine:
        for rid, result in acks.decided.items():
            try:
                if engine.get_decision(rid).result.value != result:
                    lost.append(rid)
            except NotFound:
                lost.append(rid)
        for rid in acks.executed:
            execution = engine.get_execution(rid)
            if execution is None or execution.status.value != "executed":
                lost.append(rid)
        claims = Counter(e.request_id for e in engine.audit_events(type="execution.claimed", limit=1_000_000))
        doubles = [rid for rid, n in claims.items() if n > 1]
        for rid in claims:  # a claim that was granted, acknowledged or not, is never granted again
            try:
                engine.claim_execution(rid, claimant="after-the-kill")
                doubles.append(rid)
            except ConflictError:
                pass
        report = engine.verify_audit()
    record.add(acknowledged=len(acks.decided), lost=len(lost), double_executions=len(doubles))
    assert report.ok, report
    assert not lost, f"acknowledged but not in the store: {lost}"
    assert not doubles, f"claimed twice: {doubles}"
    assert acks.decided and acks.executed, "the killed processes acknowledged nothing: the test tested nothing"


def lines(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]  # a torn last line was not acknowledged


def kill_embedded(db: str, forks: Any, tmp: Path, record: Counts, rounds: int) -> None:
    prepare(db)
    acks = Acks()
    rng = random.Random()
    for r in range(rounds):
        out = tmp / f"embedded-{r}.log"
        pid = forks.start("decide_loop", out, db=db, tag=f"r{r}")
        deadline = time.monotonic() + 30
        while not any(line.startswith("executed") for line in lines(out)):  # the clock starts once a whole call has gone through
            assert time.monotonic() < deadline, Path(f"{out}.err").read_text()
            time.sleep(0.005)
        time.sleep(rng.uniform(0.01, 0.35))
        assert forks.kill(pid) == -9, Path(f"{out}.err").read_text()
        acks.read(lines(out))
        record.add(runs=1, kills=1)
    check(db, acks, record)


def kill_server(db: str, forks: Any, tmp: Path, record: Counts, rounds: int) -> None:
    prepare(db)
    with Engine(db) as engine:
        _, token = engine.keys.create("killed-agent", "agent", identity="agent-k")
    acks = Acks()
    rng = random.Random()
    for r in range(rounds):
        pid, url = forks.serve(db, tmp / f"serve-{r}.log")
        killer = threading.Timer(rng.uniform(0.02, 0.6), forks.kill, (pid,))
        said: list[str] = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            try:
                for i in range(100_000):
                    answer = client.post("/v1/decisions", json={**action(i, f"s{r}"), "actor": "agent-k"})
                    assert answer.status_code == 200, answer.text
                    decision = answer.json()
                    said.append(f"ack {decision['request_id']} {decision['result']}")
                    if decision["allowed"]:
                        rid = decision["request_id"]
                        assert client.post(f"/v1/decisions/{rid}/claim", json={"claimant": "agent-k"}).status_code == 200
                        said.append(f"claimed {rid}")
                        done = client.post(f"/v1/decisions/{rid}/execution", json={"status": "executed"})
                        assert done.status_code == 200, done.text
                        said.append(f"executed {rid}")
                        if killer.ident is None:
                            killer.start()  # the clock starts once a whole call has gone through
            except httpx.TransportError:
                pass  # the server died under the request: it was never acknowledged
            finally:
                if killer.ident is not None:
                    killer.join()  # it has killed the server, or will
                else:
                    forks.kill(pid)
        acks.read(said)
        record.add(runs=1, kills=1, requests=len(said))
    check(db, acks, record)


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_sigkill_on_sqlite(mode: str, forks: Any, tmp_path: Path, record: Counts) -> None:
    record.area, record.backend = f"SIGKILL, {mode}", "SQLite"
    db = str(tmp_path / "killed.db")
    (kill_embedded if mode == "embedded" else kill_server)(db, forks, tmp_path, record, scaled(4 if mode == "embedded" else 2))


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_sigkill_on_postgresql(mode: str, pg_url: str, forks: Any, tmp_path: Path, record: Counts) -> None:
    record.area, record.backend = f"SIGKILL, {mode}", "PostgreSQL"
    (kill_embedded if mode == "embedded" else kill_server)(pg_url, forks, tmp_path, record, scaled(3 if mode == "embedded" else 2))
