"""Benchmark the control-plane server: decisions per second and latency at 500/s offered load.

Starts ``clearance serve`` as its own process on a fresh SQLite file (or ``--db``), creates an
agent key, applies a small policy, then drives ``POST /v1/decisions`` from this process with
concurrent keep-alive connections (a minimal asyncio HTTP/1.1 client, so the client spends as
little CPU as possible; both processes share this machine's cores):

1. throughput: ``--connections`` closed-loop clients for ``--seconds``;
2. offered load: requests started on a fixed schedule at ``--rate`` per second (open loop;
   latency counts from the scheduled start, so queueing is not hidden).

Each request carries an ``Idempotency-Key`` like RemoteEngine's (``--no-idempotency-key`` to
leave it out). The last line is JSON with ``decisions_per_s``, ``p99_ms_at_500`` and
``bytes_per_decision`` (the store's pages in use after the run, per decision made).

``--db`` takes a SQLite file or a database URL (``postgresql://USER@HOST/DB``: the store the
servers share). ``--replicas N`` then starts N server processes on that one database, each on
its own port (as N machines behind a load balancer would be), spreads the same connections over
them, and adds ``decisions_per_s_N_replicas`` beside the one-server ``decisions_per_s``.

    python benchmarks/server.py [--seconds 10] [--connections 16] [--rate 500]
    python benchmarks/server.py --db postgresql://postgres@127.0.0.1/bench --replicas 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RULES = """
version: 1
rules:
  - id: refunds
    tool: refund_payment
    max_value: 5000
    require_approval_above: 100000
  - id: search-rate
    tool: search
    max_per_hour: 1000000
  - id: no-drops
    tool: drop_*
    effect: block
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (Linux /proc; the workers
    of ``--workers N`` are children), plus children it has reaped; 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    try:
        children = {int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()}
    except OSError:
        children = set()
    return total + sum(cpu_seconds(c) for c in children)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CLEARANCE_DB=db)
    proc = subprocess.Popen([sys.executable, "-m", "clearance", "serve", "--port", str(port), "--log-level", "warning",
                             "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int, token: str, idempotency: bool) -> None:
        self.port, self.token, self.idempotency = port, token, idempotency
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> int:
        assert self.reader is not None and self.writer is not None
        idem = f"Idempotency-Key: {uuid.uuid4().hex}\r\n" if self.idempotency else ""
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{idem}\r\n")  # fmt: skip
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(length)
        return status


def body(i: int) -> bytes:
    tool = ("refund_payment", "search", "send_email")[i % 3]
    action = {"tool": tool, "arguments": {"order_id": f"ord_{i}", "amount": 10 + i % 50}, "domain": "shop",
              "value": float(10 + i % 50), "target": f"cust_{i % 100}"}  # fmt: skip
    return json.dumps(action).encode()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def closed_loop(port: int | list[int], token: str, idem: bool, connections: int, seconds: float) -> dict[str, float]:
    ports = port if isinstance(port, list) else [port]
    conns = [Conn(ports[i % len(ports)], token, idem) for i in range(connections)]  # spread over the replicas
    await asyncio.gather(*(c.open() for c in conns))
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker(c: Conn) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status = await c.post("/v1/decisions", body(next(counter)))
            latencies.append(time.perf_counter() - t0)
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        assert c.writer is not None
        c.writer.close()
    return {"requests": len(latencies), "errors": errors, "per_s": len(latencies) / elapsed,
            "p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000}  # fmt: skip


async def open_loop(port: int, token: str, idem: bool, rate: float, seconds: float, connections: int) -> dict[str, float]:
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    conns = [Conn(port, token, idem) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    for c in conns:
        pool.put_nowait(c)
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        c = await pool.get()  # waiting for a free connection counts as latency
        try:
            status = await c.post("/v1/decisions", body(i))
        finally:
            pool.put_nowait(c)
        latencies.append(time.perf_counter() - scheduled)
        errors += status != 200

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for c in conns:
        assert c.writer is not None
        c.writer.close()
    return {"requests": total, "errors": errors, "achieved_per_s": total / elapsed,
            "p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000}  # fmt: skip


def bytes_per_decision(db: str) -> float | None:
    """The SQLite store's pages in use (WAL checkpointed; free pages left out), per decision."""
    import sqlite3

    if "://" in db:
        return None  # a database server's size is not this file's
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = pages * conn.execute("PRAGMA page_size").fetchone()[0]
        decisions = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    finally:
        conn.close()
    return size / max(decisions, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--db", default=None, help="SQLite file or database URL, e.g. postgresql://postgres@127.0.0.1/bench "
                    "(default: a fresh temporary SQLite file); a URL is used as it is, never as a file name")
    ap.add_argument("--replicas", type=int, default=1, help="also measure N server processes on the one database")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (clearance serve --workers)")
    ap.add_argument("--no-idempotency-key", dest="idem", action="store_false")
    return ap.parse_args(argv)


def store_location(args: argparse.Namespace, tmp: str) -> str:
    """The store the servers share: ``--db`` as given (a file or a URL: a string, as a Path
    would turn ``postgresql://x`` into ``postgresql:/x``), else a fresh file in ``tmp``."""
    return args.db if args.db is not None else str(Path(tmp) / "bench.db")


def main() -> None:
    args = parse_args()

    from clearance import Engine, parse_rules
    tmp = tempfile.TemporaryDirectory(prefix="clearance-bench-")
    db = store_location(args, tmp.name)
    with Engine(db) as engine:
        engine.apply_rules(parse_rules(RULES))
        _, token = engine.keys.create("bench", "agent", identity="agent-bench")
    port = free_port()
    server = start_server(db, port, args.workers)
    try:
        time.sleep(1.0 if args.workers == 1 else 3.0)  # let every worker start
        asyncio.run(closed_loop(port, token, args.idem, 4, 1.0))  # warm up
        cpu0, client0 = cpu_seconds(server.pid), time.process_time()
        tput = asyncio.run(closed_loop(port, token, args.idem, args.connections, args.seconds))
        cpu_ms = (cpu_seconds(server.pid) - cpu0) * 1000 / max(tput["requests"], 1)
        client_ms = (time.process_time() - client0) * 1000 / max(tput["requests"], 1)
        print(f"server CPU: {cpu_ms:.2f} ms per decision (a bound of {1000 / cpu_ms if cpu_ms else 0:.0f}/s per core); "
              f"load generator CPU: {client_ms:.2f} ms per request ({client_ms * tput['per_s'] / 10:.0f}% of a core)")
        print(f"throughput: {tput['per_s']:.0f} decisions/s with {args.connections} keep-alive connections "
              f"(p50 {tput['p50_ms']:.1f} ms, p99 {tput['p99_ms']:.1f} ms, {tput['errors']} errors of {tput['requests']:.0f})")
        load = asyncio.run(open_loop(port, token, args.idem, args.rate, args.seconds, max(args.connections, 32)))
        print(f"offered {args.rate:.0f}/s: achieved {load['achieved_per_s']:.0f}/s, p50 {load['p50_ms']:.1f} ms, "
              f"p99 {load['p99_ms']:.1f} ms ({load['errors']} errors of {load['requests']:.0f})")
        replicated = None
        if args.replicas > 1:
            ports = [port] + [free_port() for _ in range(args.replicas - 1)]
            others = [start_server(db, p, args.workers) for p in ports[1:]]
            try:
                time.sleep(1.0)
                asyncio.run(closed_loop(ports, token, args.idem, 4, 1.0))  # warm up
                replicated = asyncio.run(closed_loop(ports, token, args.idem, args.connections, args.seconds))
            finally:
                for proc in others:
                    proc.terminate()
                    proc.wait(timeout=10)
            print(f"{args.replicas} replicas on one database: {replicated['per_s']:.0f} decisions/s "
                  f"(p50 {replicated['p50_ms']:.1f} ms, p99 {replicated['p99_ms']:.1f} ms, "
                  f"{replicated['errors']} errors of {replicated['requests']:.0f})")
        server.terminate()
        server.wait(timeout=10)
        per_decision = bytes_per_decision(db)
        if per_decision is not None:
            print(f"store: {per_decision:,.0f} bytes per decision (pages in use, all tables and indexes)")
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
        tmp.cleanup()
    extra: dict[str, object] = {}
    if replicated is not None:
        extra = {f"decisions_per_s_{args.replicas}_replicas": round(replicated["per_s"], 1),
                 f"p99_ms_{args.replicas}_replicas": round(replicated["p99_ms"], 2), "replicas": args.replicas}
        tput["errors"] += replicated["errors"]
    if per_decision is not None:
        extra["bytes_per_decision"] = round(per_decision)
    print(json.dumps({"decisions_per_s": round(tput["per_s"], 1), **extra, "database": db.split("://")[0] if "://" in db
                      else "sqlite", "p50_ms": round(tput["p50_ms"], 2),
                      "p99_ms": round(tput["p99_ms"], 2), f"p50_ms_at_{args.rate:.0f}": round(load["p50_ms"], 2),
                      "p99_ms_at_500" if args.rate == 500 else f"p99_ms_at_{args.rate:.0f}": round(load["p99_ms"], 2),
                      "achieved_per_s_at_offered": round(load["achieved_per_s"], 1), "offered_per_s": args.rate,
                      "connections": args.connections, "workers": args.workers, "idempotency_key": args.idem,
                      "errors": int(tput["errors"] + load["errors"]), "server_cpu_ms_per_decision": round(cpu_ms, 3),
                      "client_cpu_ms_per_request": round(client_ms, 3),
                      "cpus": os.cpu_count()}))  # fmt: skip


if __name__ == "__main__":
    main()
