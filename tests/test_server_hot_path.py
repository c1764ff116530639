"""What the decision path's shortcuts must keep: ``POST /v1/decisions`` is answered ahead of the
framework (``DecisionEndpoint``) and a throttled client ahead of everything (a rendered 429 sent
again and again), so these check what a caller sees of both, answer by answer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clearance import Engine

from app_support import InProcessApp

LIMIT = 3


@pytest.fixture
def served(tmp_path: Path):
    engine = Engine(tmp_path / "hot.db")
    _, agent = engine.keys.create("bot", "agent", identity="agent-7")
    app = InProcessApp(engine, auth_failures_per_minute=LIMIT, metrics_key="scrape").start()
    client = httpx.Client(transport=app.transport(), base_url=app.url)
    yield client, agent, engine
    client.close()
    app.stop()
    engine.close()


def test_a_decision_echoes_the_correlation_id_once_and_binds_the_keys_actor(served) -> None:
    client, agent, engine = served
    auth = {"Authorization": f"Bearer {agent}"}
    given = client.post("/v1/decisions", json={"tool": "lookup"}, headers={**auth, "X-Correlation-Id": "trace-7.a"})
    assert given.status_code == 200, given.text
    assert given.headers.get_list("x-correlation-id") == ["trace-7.a"]
    made = client.post("/v1/decisions", json={"tool": "lookup"}, headers=auth)
    fresh = made.headers.get_list("x-correlation-id")
    assert len(fresh) == 1 and len(fresh[0]) == 32 and fresh[0] != "trace-7.a"
    # The key's identity fills in the missing actor, in what is answered and in what is kept.
    assert made.json()["actor"] == "agent-7"
    assert engine.get_action(made.json()["request_id"]).actor == "agent-7"
    other = client.post("/v1/decisions", json={"tool": "lookup", "actor": "agent-8"}, headers=auth)
    assert other.status_code == 403 and other.json()["error"]["type"] == "forbidden"


def test_every_early_429_is_the_whole_answer_and_is_counted(served) -> None:
    client, agent, _ = served
    mine = {"Authorization": f"Bearer {agent}"}
    assert client.post("/v1/decisions", json={"tool": "t"}, headers=mine).status_code == 200  # known here
    guess = {"Authorization": "Bearer clr_0123456789abcdef_" + "x" * 32}
    refused = [client.post("/v1/decisions", json={"tool": "t"}, headers=guess) for _ in range(LIMIT)]
    assert [r.status_code for r in refused] == [401] * LIMIT
    throttled = [client.post(path, json={"tool": "t"}, headers=guess)
                 for path in ("/v1/decisions", "/v1/outcomes/batch", "/v1/decisions", "/v1/approvals")]  # fmt: skip
    for answer in throttled:
        assert answer.status_code == 429
        assert answer.json()["error"]["type"] == "too_many_requests" and answer.json()["error"]["status"] == 429
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert int(answer.headers["content-length"]) == len(answer.content)
    text = client.get("/metrics", headers={"Authorization": "Bearer scrape"}).text
    assert 'clearance_auth_failures_total{outcome="throttled"} 4.0' in text
    # The agent's own key, known here, still decides from the same (throttled) address.
    assert client.post("/v1/decisions", json={"tool": "t"}, headers=mine).status_code == 200
