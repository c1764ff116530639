"""Failed authentication is rate-limited per client address and key prefix, and counted in
metrics (issue 17, defect 1): a client guessing keys is answered 429 without a lookup, while a
valid key from the same address goes on working."""

from __future__ import annotations

from pathlib import Path

import pytest

import httpx

from clearance import Engine
from clearance.server.throttle import key_prefix

from app_support import InProcessApp

LIMIT = 5


@pytest.fixture
def app(tmp_path: Path):
    engine = Engine(tmp_path / "t.db")
    _, token = engine.keys.create("ops", "admin")
    app = InProcessApp(engine, auth_failures_per_minute=LIMIT, metrics_key="scrape").start()
    client = httpx.Client(transport=app.transport(), base_url=app.url)
    yield client, token
    client.close()
    app.stop()
    engine.close()


@pytest.mark.parametrize("method,path", [("GET", "/v1/approvals"), ("POST", "/v1/decisions"), ("GET", "/metrics")])
def test_a_client_that_keeps_failing_is_throttled_on_every_route(app, method: str, path: str) -> None:
    client, token = app
    assert client.get("/v1/approvals", headers={"Authorization": f"Bearer {token}"}).status_code == 200  # known here
    bad = token[: token.rindex("_")] + "_wrongsecret"  # a real key id, a guessed secret
    answers = [client.request(method, path, json={"tool": "t"}, headers={"Authorization": f"Bearer {bad}"})
               for _ in range(LIMIT + 3)]  # fmt: skip
    assert [a.status_code for a in answers] == [401] * LIMIT + [429] * 3
    last = answers[-1]
    assert last.json()["error"]["type"] == "too_many_requests"
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    # The key's owner is not locked out, though its address and its key id are throttled.
    ok = client.request(method, path, json={"tool": "t"}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text


def test_failures_are_counted_in_metrics(app) -> None:
    client, token = app
    for _ in range(LIMIT + 2):
        client.get("/v1/approvals")  # no key at all
    text = client.get("/metrics", headers={"Authorization": "Bearer scrape"}).text
    assert f'clearance_auth_failures_total{{outcome="missing"}} {LIMIT}.0' in text
    assert 'clearance_auth_failures_total{outcome="throttled"} 2.0' in text


def test_the_prefix_never_holds_the_secret() -> None:
    assert key_prefix("clr_k123_s3cr3t") == "clr_k123"
    assert key_prefix("sk-abcdefghijkl") == "sk-abcde"
    assert key_prefix("") == ""


def test_guesses_at_one_key_from_many_addresses_are_throttled_by_its_prefix(tmp_path: Path) -> None:
    from clearance.server.throttle import AuthThrottle

    throttle = AuthThrottle(per_minute=3)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert throttle.retry_after(address, "clr_k1_guess") is None
        throttle.failed(address, "clr_k1_guess")
    assert throttle.retry_after("10.0.0.4", "clr_k1_another") is not None  # a fourth address, the same key id
    assert throttle.retry_after("10.0.0.4", "clr_k2_guess") is None  # another key id is not affected
    throttle.succeeded("clr_k1_realsecret")
    assert throttle.retry_after("10.0.0.4", "clr_k1_realsecret") is None  # the owner still gets in


def test_a_throttled_address_is_answered_before_routing_but_health_still_answers(app) -> None:
    client, token = app
    assert client.get("/v1/approvals", headers={"Authorization": f"Bearer {token}"}).status_code == 200  # known here
    for _ in range(LIMIT):
        client.get("/v1/approvals")
    early = client.get("/v1/no-such-route")  # a 404 one layer later: answered before routing
    assert early.status_code == 429 and early.json()["error"]["type"] == "too_many_requests"
    assert client.get("/v1/health").status_code == 200
    assert client.get("/v1/approvals", headers={"Authorization": f"Bearer {token}"}).status_code == 200
