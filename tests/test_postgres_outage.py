"""A PostgreSQL outage during traffic, on a cluster of the test's own (``initdb`` under a temp
folder, a free port), stopped and started again while decisions are being asked for:

- every decision asked for meanwhile fails closed: a 503 whose body says the store is
  unavailable (never a 500, never an answer that was not recorded);
- no tool runs without a recorded decision: each call a client was allowed to run is found in
  the store afterwards, and the audit chain verifies;
- service resumes by itself once the database is back, with the same server process, and so
  does the approval listener (PostgreSQL LISTEN) that wakes waiters across replicas.

Skipped where PostgreSQL's server binaries are not installed (or, as root, there is no
``postgres`` user to run them as), except under CI."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clearance import Engine, parse_rules

pytestmark = pytest.mark.slow

RULES = "version: 1\nrules:\n  - id: refunds\n    tool: refund_payment\n    max_value: 1000\n"


def _skip(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


class Cluster:
    """A throw-away PostgreSQL cluster: ``initdb`` into a temp folder, ``pg_ctl`` to start and stop."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or ([shutil.which("initdb")] if shutil.which("initdb") else [])
        if not found:
            _skip("PostgreSQL's initdb is not installed")
        self.bin = Path(found[-1]).parent
        self.user: str | None = None
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as postgres
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                _skip("running as root and there is no postgres user to run initdb as")
            self.user = "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="clearance-pg-"))
        self.data = self.dir / "data"
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "-t", "30", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")  # as a crash would

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip("psycopg is not installed (pip install 'clearance[postgres]')")
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.remove()


def test_an_outage_fails_closed_and_service_resumes_by_itself(cluster: Cluster) -> None:
    from clearance.server import ServerThread

    engine = Engine(cluster.url)
    engine.apply_rules(parse_rules(RULES))
    _, token = engine.keys.create("agent-7", "agent", identity="agent-7")
    answers: list[tuple[float, int, dict]] = []
    ran: list[str] = []  # request ids of the calls whose tool ran
    stop = threading.Event()

    def agent(url: str, n: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                r = client.post("/v1/decisions", json={"tool": "refund_payment", "value": 10, "arguments": {"n": f"{n}-{i}"}})
                body = r.json()
                answers.append((time.monotonic(), r.status_code, body))
                if r.status_code == 200 and body["allowed"]:
                    ran.append(body["request_id"])  # the tool runs only on a recorded, allowed decision
                time.sleep(0.01)

    with ServerThread(engine) as server:
        agents = [threading.Thread(target=agent, args=(server.url, n)) for n in range(3)]
        for t in agents:
            t.start()
        try:
            deadline = time.monotonic() + 15
            while len(ran) < 5 and time.monotonic() < deadline:  # traffic is flowing
                time.sleep(0.05)
            before = len(ran)
            cluster.stop()
            down_at = time.monotonic()
            time.sleep(1.5)
            cluster.start()
            up_at = time.monotonic()
            deadline = up_at + 20
            while time.monotonic() < deadline and not any(t > up_at and s == 200 for t, s, _ in answers):
                time.sleep(0.1)
            time.sleep(0.3)
            # the approval listener (LISTEN on a connection of its own) is back too
            relistened = server.app.state.approval_watcher.listening.wait(10)
        finally:
            stop.set()
            for t in agents:
                t.join(timeout=30)

    statuses = {s for _, s, _ in answers}
    during = [(s, b) for t, s, b in answers if down_at + 0.2 < t < up_at]
    assert before > 0, "no traffic before the outage"
    assert during and all(s == 503 for s, _ in during), {s for s, _ in during}
    assert all(b["error"]["type"] == "unavailable" and "unavailable" in b["error"]["message"] for _, b in during)
    assert statuses <= {200, 503}, statuses  # failed closed: never a 500, never anything else
    resumed = [t for t, s, _ in answers if s == 200 and t > up_at]
    assert relistened, "the approval listener did not reconnect"
    assert resumed, "service did not resume after the database came back"
    print(f"outage: {len(during)} decisions refused with 503; resumed {resumed[0] - up_at:.2f} s after the database")
    # every call whose tool ran has its decision in the store, and the audit chain is intact
    for request_id in ran:
        assert engine.get_decision(request_id).allowed
    assert engine.verify_audit().ok
    engine.close()
