"""Benchmark the server's own CPU on two paths, without sockets or the engine's cost.

The app (``create_app``, as ``clearance serve`` runs it) is driven through ASGI in this process:

1. ``POST /v1/decisions`` by 16 concurrent callers with an agent key and an
   ``Idempotency-Key``, the engine's batch answered at once with one decision made before
   (so what is timed is the decision path's admission: key, throttle, the body's validation,
   actor binding, the key's fingerprint, metrics, the answer), and
2. refusals of a throttled address (a guessed key and no key, alternately), answered by the
   app's outermost layer.

HTTP parsing (uvicorn, httptools) is not in either figure. CPU time, so other jobs on the
machine move it less than wall time. Compare commits by running the same script with each
one's code first on ``PYTHONPATH``. The last line is JSON: ``decision_path_cpu_us`` and
``refusal_cpu_us`` (per request).

    python benchmarks/server_layer.py [--requests 6000] [--refusals 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import RULES, body  # noqa: E402


class Driver:
    """The app's lifespan run on this loop, and requests sent to it as a server would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Future[Any] | None = None

    async def __aenter__(self) -> Driver:
        await self._to_app.put({"type": "lifespan.startup"})
        self._task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                    self._to_app.get, self._from_app.put))  # fmt: skip
        started = await self._from_app.get()
        assert started["type"] == "lifespan.startup.complete", started
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        assert self._task is not None
        await self._task

    async def post(self, path: str, payload: bytes, headers: list[tuple[bytes, bytes]]) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(payload)).encode()), *headers],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "state": {}}  # fmt: skip
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Event().wait()  # the client stays; a server would send http.disconnect later
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


async def decision_path(db: Path, token: str, requests: int, callers: int = 16) -> float:
    from clearance import Action
    from clearance.server.app import create_app

    app = create_app(db, dashboard=False)
    made = app.state.engine.evaluate_serialised(Action.model_validate_json(body(0)))

    async def answered(operation: Any) -> Any:  # the engine's batch, answered at once
        return made

    app.state.decisions.writer.submit = answered
    counter = iter(range(10**9))
    auth = (b"authorization", f"Bearer {token}".encode())
    async with Driver(app) as driver:

        async def caller(n: int) -> None:
            for _ in range(n):
                status = await driver.post("/v1/decisions", body(next(counter)), [auth, (b"idempotency-key", uuid.uuid4().hex.encode())])
                assert status == 200, status

        await asyncio.gather(*(caller(200) for _ in range(callers)))  # warm up
        started = time.process_time()
        await asyncio.gather(*(caller(requests // callers) for _ in range(callers)))
        return (time.process_time() - started) / (requests // callers * callers) * 1e6


async def refusals(db: Path, n: int) -> float:
    from clearance.server.app import create_app

    app = create_app(db, dashboard=False, auth_failures_per_minute=30)
    guessed = [(b"authorization", b"Bearer clr_0123456789abcdef_" + b"x" * 32)]
    requests = [("/v1/decisions", guessed), ("/v1/outcomes/batch", [])]
    payload = b'{"tool": "refund_payment"}'
    async with Driver(app) as driver:
        for i in range(100):  # the first 30 are 401s; then the address is throttled
            path, headers = requests[i % 2]
            await driver.post(path, payload, headers)
        started = time.process_time()
        for i in range(n):
            path, headers = requests[i % 2]
            status = await driver.post(path, payload, headers)
            assert status == 429, status
        return (time.process_time() - started) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--refusals", type=int, default=10_000)
    args = ap.parse_args()

    from clearance import Engine, parse_rules

    tmp = tempfile.TemporaryDirectory(prefix="clearance-layer-")
    db = Path(tmp.name) / "layer.db"
    with Engine(db) as engine:
        engine.apply_rules(parse_rules(RULES))
        _, token = engine.keys.create("bench", "agent", identity="agent-bench")
    decision_us = asyncio.run(decision_path(db, token, args.requests))
    refusal_us = asyncio.run(refusals(Path(tmp.name) / "refusals.db", args.refusals))
    print(f"decision path: {decision_us:.1f} us of CPU a request; throttled refusal: {refusal_us:.1f} us")
    print(json.dumps({"decision_path_cpu_us": round(decision_us, 1), "refusal_cpu_us": round(refusal_us, 1),
                      "requests": args.requests, "refusals": args.refusals}))  # fmt: skip
    tmp.cleanup()


if __name__ == "__main__":
    main()
