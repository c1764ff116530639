"""Two servers (two engines, as two replicas on two machines would have) on one PostgreSQL
database: an approval resolved through one wakes a waiter on the other within a second (by
the store's NOTIFY, not by polling), and a
kill switch set through one is enforced by the other within a second. Skipped without a server
at 127.0.0.1:5432, except under CI (the ``pg_url`` fixture, conftest.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import RULES

from clearance import Engine, parse_rules
from clearance.remote import RemoteEngine


@pytest.fixture(scope="module")
def replicas(pg_url: str) -> Iterator[dict[str, Any]]:
    from clearance.server import ServerThread

    first, second = Engine(pg_url), Engine(pg_url)
    first.apply_rules(parse_rules(RULES))
    tokens = {name: first.keys.create(name, role, identity=name)[1]
              for name, role in (("agent-7", "agent"), ("alice", "approver"), ("ops", "admin"))}  # fmt: skip
    with ServerThread(first) as a, ServerThread(second) as b:
        for server in (a, b):  # each replica LISTENs for approval changes on a connection of its own
            assert server.app.state.approval_watcher.listening.wait(10)
        yield {"a": a.url, "b": b.url, "tokens": tokens}
    first.close()
    second.close()


def test_a_waiter_on_one_replica_wakes_when_another_resolves(replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from clearance.server.routes import approvals

    # Polling alone would take this long: the wake-up has to come from PostgreSQL's NOTIFY.
    monkeypatch.setattr(approvals, "WATCHED_POLL_SECONDS", 60.0)
    tokens = replicas["tokens"]
    with RemoteEngine(replicas["a"], tokens["agent-7"]) as agent, RemoteEngine(replicas["b"], tokens["alice"]) as alice:
        decision = agent.evaluate({"tool": "refund_payment", "value": 700})
        assert decision.requires_approval
        woke: dict[str, Any] = {}

        def wait() -> None:
            woke["approval"] = agent.wait_approval(decision.approval_id, timeout_seconds=20)  # long-poll on replica a
            woke["at"] = time.monotonic()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)  # the long-poll is waiting on replica a
        assert "approval" not in woke
        alice.resolve_approval(decision.approval_id, "approved", approver="alice")  # through replica b
        resolved_at = time.monotonic()
        waiter.join(timeout=10)
        assert woke["approval"].status.value == "approved"
        assert woke["at"] - resolved_at < 1.0


def test_a_kill_switch_set_through_one_replica_is_enforced_by_the_other(replicas: dict[str, Any]) -> None:
    tokens = replicas["tokens"]
    with RemoteEngine(replicas["a"], tokens["agent-7"]) as agent, RemoteEngine(replicas["b"], tokens["ops"]) as ops:
        assert agent.evaluate({"tool": "send_email"}).allowed
        ops.activate_kill_switch(tool="send_email", reason="incident 7", by="ops")
        switched = time.monotonic()
        while True:  # enforced within one second (here: on the next decision; nothing is cached)
            decision = agent.evaluate({"tool": "send_email"})
            if decision.result.value == "blocked" or time.monotonic() - switched > 1.0:
                break
            time.sleep(0.05)
        assert decision.result.value == "blocked" and "incident 7" in decision.reason
        assert time.monotonic() - switched < 1.0
        assert ops.deactivate_kill_switch(tool="send_email", by="ops")
        assert agent.evaluate({"tool": "send_email"}).allowed


def test_a_plain_postgresql_url_is_a_database_never_a_file(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from clearance.cli import app

    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")  # psycopg 3, not SQLAlchemy's default psycopg2
    monkeypatch.chdir(tmp_path)
    with Engine(plain) as engine:
        assert engine.store.dialect == "postgresql"
        assert engine.evaluate({"tool": "send_email"}).allowed
    result = CliRunner().invoke(app, ["--db", plain, "audit", "verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["events_checked"] >= 1
    assert list(tmp_path.iterdir()) == []  # no file named after the URL


def test_the_server_benchmark_takes_a_url_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks.server import parse_args, store_location

    url = "postgresql://postgres@127.0.0.1:5432/bench"
    assert store_location(parse_args(["--db", url, "--replicas", "2"]), str(tmp_path)) == url
    assert store_location(parse_args([]), str(tmp_path)) == str(tmp_path / "bench.db")


def test_the_pool_is_sized_from_the_environment(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARANCE_PG_POOL_SIZE", "3")
    monkeypatch.setenv("CLEARANCE_PG_MAX_OVERFLOW", "2")
    with Engine(pg_url) as engine:
        pool = engine.store.engine.pool
        assert (pool.size(), pool._max_overflow) == (3, 2)  # type: ignore[attr-defined]
    monkeypatch.setenv("CLEARANCE_PG_POOL_SIZE", "lots")
    with pytest.raises(ValueError, match="CLEARANCE_PG_POOL_SIZE must be a whole number"):
        Engine(pg_url)
