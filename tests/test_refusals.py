"""A flood of refused requests costs a few audit rows, not one fsync'd event each, and no row
holds the raw path (issue 17, defect 1)."""

from __future__ import annotations

from pathlib import Path

import httpx

from clearance import Engine
from clearance.server import ServerThread
from clearance.server.refusals import PER_WINDOW, Refusals
from clearance.server.throttle import DEFAULT_PER_MINUTE

FLOOD = 200


def test_a_flood_of_unauthenticated_requests_is_audited_in_a_few_rows(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "flood.db")
    long_id = "x" * 60
    with ServerThread(engine) as server, httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/decisions", json={"tool": "t"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        statuses = [client.get(f"/v1/decisions/{long_id}").status_code for _ in range(FLOOD)]
        during = engine.audit_events(type="auth.refused", limit=1000)
    # Past the throttle's allowance the flood is answered 429 without a lookup, and not audited.
    assert statuses == [401] * (DEFAULT_PER_MINUTE - 1) + [429] * (FLOOD - DEFAULT_PER_MINUTE + 1)
    after = engine.audit_events(type="auth.refused", limit=1000)  # the server stopped: the summary is written
    assert len(during) == PER_WINDOW + 1  # three of the flood, one of the other route
    assert len(after) == PER_WINDOW + 2
    assert sum(e.payload["count"] for e in after) == DEFAULT_PER_MINUTE
    assert {e.payload["route"] for e in after} == {"/v1/decisions/{request_id}", "/v1/decisions"}
    assert not any(long_id in str(e.payload) for e in after)
    assert engine.verify_audit().ok
    engine.close()


def test_windows_roll_and_stay_bounded() -> None:
    written: list[dict] = []
    now = [0.0]
    refusals = Refusals(written.append, clock=lambda: now[0])

    def refuse(client: str) -> None:
        refusals.note({"status": 401, "client": client, "key_id": None, "method": "GET", "route": "/v1/x", "reason": "no key"})

    for _ in range(10):
        refuse("a")
    assert [w["count"] for w in written] == [1, 1, 1]
    now[0] = 61.0  # the next window: the last one's summary, then this refusal
    refuse("a")
    assert [w["count"] for w in written] == [1, 1, 1, 7, 1] and written[3]["reason"].startswith("7 more like this")
    refuse("b")
    refusals.flush()  # nothing held back: nothing more
    assert len(written) == 6
