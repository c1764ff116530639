"""/metrics behind a key when one is set (issue 17, defect 11): the metrics key or an admin API key
may scrape; no key is 401 and another role 403, audited; without a key set it stays open."""

from __future__ import annotations

from pathlib import Path

import httpx

from clearance import Engine
from clearance.server import ServerThread


def test_metrics_behind_a_key(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "m.db")
    _, admin = engine.keys.create("ops", "admin")
    _, agent = engine.keys.create("bot", "agent")
    with ServerThread(engine, metrics_key="scrape-me") as server:
        def get(token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.get(f"{server.url}/metrics", headers=headers).status_code

        assert [get(None), get("wrong"), get(agent), get("scrape-me"), get(admin)] == [401, 401, 403, 200, 200]
    assert sorted(e.payload["status"] for e in engine.audit_events(type="auth.refused")) == [401, 401, 403]
    with ServerThread(engine) as server:  # no key set: open, as before
        assert httpx.get(f"{server.url}/metrics").status_code == 200
    engine.close()
