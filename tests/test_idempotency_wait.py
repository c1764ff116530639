"""A retry whose Idempotency-Key was left reserved by a request that never finished (a crash
between running and storing the answer) gets its 409 within a few seconds, inside
RemoteEngine's read timeout, not after 30 (issue 17, defect 10); the operation is not run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from clearance import Engine
from clearance.server import ServerThread
from clearance.server.idempotency import WAIT_SECONDS, request_fingerprint


def test_a_key_left_reserved_answers_409_quickly(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "idem.db")
    key, token = engine.keys.create("ops", "admin")
    body = json.dumps({"tool": "refund"}).encode()
    scope = {"method": "POST", "path": "/v1/kill-switches", "query_string": b""}
    assert engine.idempotency.begin(key.key_id, "retry-me", request_fingerprint(scope, body))[0] == "new"  # then "crashed"
    with ServerThread(engine) as server:
        started = time.monotonic()
        r = httpx.post(f"{server.url}/v1/kill-switches", content=body, timeout=30,
                       headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "retry-me",
                                "content-type": "application/json"})  # fmt: skip
        waited = time.monotonic() - started
    assert r.status_code == 409 and r.json()["error"]["type"] == "idempotency_in_progress"
    assert WAIT_SECONDS <= waited < 8.0  # waited for the holder a little, then answered (RemoteEngine reads for 10 s)
    assert engine.kill_switches() == []  # nothing ran under the key
    engine.close()
