"""Provider resilience of the OpenAI adapter: retries, Retry-After, backoff knobs, circuit breaker.

The guard turns the SDK's own retries off (``max_retries=0``) and retries model requests itself,
only on transient failures. So on the wire every attempt is a fresh SDK call
(``x-stainless-retry-count: 0``) and the server sees one request per attempt. Tools are never
retried: a tool runs only after a response has arrived.

Backoffs are tiny here; the only durations measured are lower bounds the adapter promises
(it waited at least what the server asked).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from adapter_support import FAST, decision_rows, guard_for, refund_payment, tool_outputs
from sdk_support import sdk_request

from clearance import AsyncGuardedOpenAI, Engine, GuardedOpenAI
from clearance.adapters.openai import CircuitOpenError
from clearance.adapters.openai.resilience import CircuitBreaker, ResilienceConfig
from clearance.testing import ScriptedOpenAI, turn

Serve = Callable[..., ScriptedOpenAI]
USER = [{"role": "user", "content": "Refund order ord_1 for 10"}]


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def refund_payment(self, order_id: str, amount: float) -> dict[str, Any]:
        self.calls += 1
        return refund_payment(order_id, amount)


def guard(server: ScriptedOpenAI, engine: Any, counter: Counter | None = None, cls: type = GuardedOpenAI,
          **kw: Any) -> Any:  # fmt: skip
    g = guard_for(server, engine, cls, **kw)
    g.tool("refund_payment", (counter or Counter()).refund_payment, value_from_args=lambda a: a["amount"])
    return g


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now: connections are refused
    return port


class DroppingProxy:
    """TCP proxy to ``upstream`` that closes the first ``drop`` connections without a reply."""

    def __init__(self, upstream: ScriptedOpenAI, drop: int) -> None:
        self.upstream_port = upstream.port
        self.drop = drop
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                conn.recv(65536)  # read the request, then hang up
                conn.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()


# ---------------------------------------------------------------------------- what is retried


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_http_errors_are_retried(serve: Serve, engine: Engine, status: int) -> None:
    server = serve(turn.error(status), turn.text("ok"))
    result = guard(server, engine).run(messages=USER, model="gpt-4.1")
    assert result["output_text"] == "ok"
    assert len(server.requests) == 2
    # SDK retries are off: each attempt is the adapter's own, a fresh SDK call
    assert [r.retry_count for r in server.requests] == [0, 0]
    assert server.requests[0].json == server.requests[1].json


@pytest.mark.parametrize(
    "status, exc",
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
    ],
)
def test_client_errors_fail_at_once(serve: Serve, engine: Engine, status: int, exc: type) -> None:
    server = serve(turn.error(status), turn.text("never"))
    with pytest.raises(exc):
        guard(server, engine, provider_max_retries=5).run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 1


def test_retries_are_bounded_by_provider_max_retries(serve: Serve, engine: Engine) -> None:
    server = serve(*[turn.error(503)] * 4)
    with pytest.raises(openai.InternalServerError):
        guard(server, engine, provider_max_retries=2).run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 3 and len(server.remaining) == 1


def test_provider_max_retries_zero_means_one_attempt(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(500), turn.text("never"))
    with pytest.raises(openai.InternalServerError):
        guard(server, engine, provider_max_retries=0).run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 1


def test_connection_refused_is_retried_then_raised(engine: Engine) -> None:
    attempts: list[str] = []

    class Counting:
        """The real SDK client; counts the adapter's attempts (nothing listens to count them)."""

        def __init__(self, client: Any) -> None:
            self.client = client

        def with_options(self, **kw: Any) -> Counting:
            return Counting(self.client.with_options(**kw))

        @property
        def responses(self) -> Counting:
            return self

        def create(self, **kw: Any) -> Any:
            attempts.append(kw["model"])
            return self.client.responses.create(**kw)

    real = openai.OpenAI(base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="test")
    g = GuardedOpenAI(client=Counting(real), engine=engine, provider_max_retries=2, **FAST)
    with pytest.raises(openai.APIConnectionError):
        g.run(messages=USER, model="gpt-4.1")
    assert len(attempts) == 3


def test_dropped_connection_is_retried_and_the_run_completes(serve: Serve, engine: Engine) -> None:
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}), turn.text("ok"))
    proxy = DroppingProxy(server, drop=1)
    counter = Counter()
    try:
        result = guard(server, engine, counter, base_url=proxy.base_url).run(messages=USER, model="gpt-4.1")
    finally:
        proxy.close()
    assert result["output_text"] == "ok" and counter.calls == 1
    assert proxy.accepted >= 2 and len(server.requests) == 2


def test_timeout_is_retried(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("too late").delayed(5), turn.text("in time"))
    result = guard(server, engine, provider_timeout_seconds=0.3).run(messages=USER, model="gpt-4.1")
    assert result["output_text"] == "in time" and len(server.requests) == 2


def test_timeout_without_retries_raises_api_timeout(serve: Serve, engine: Engine) -> None:
    server = serve(turn.text("too late").delayed(5))
    with pytest.raises(openai.APITimeoutError):
        guard(server, engine, provider_timeout_seconds=0.3, provider_max_retries=0).run(messages=USER, model="gpt-4.1")


def test_async_guard_retries_too(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(429), turn.error(500), turn.text("ok"))

    async def main() -> dict[str, Any]:
        return await guard(server, engine, cls=AsyncGuardedOpenAI).run(messages=USER, model="gpt-4.1")

    assert asyncio.run(main())["output_text"] == "ok" and len(server.requests) == 3


def test_async_guard_client_errors_fail_at_once(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(401), turn.text("never"))

    async def main() -> None:
        await guard(server, engine, cls=AsyncGuardedOpenAI).run(messages=USER, model="gpt-4.1")

    with pytest.raises(openai.AuthenticationError):
        asyncio.run(main())
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------- how long it waits


def test_retry_after_is_honoured(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(429, retry_after=1), turn.text("ok"))
    guard(server, engine).run(messages=USER, model="gpt-4.1")  # backoff is 10 ms; the server asked for 1 s
    first, second = server.requests
    assert second.received_at - first.received_at >= 0.9


def test_retry_after_ms_is_honoured(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(503, retry_after_ms=400), turn.text("ok"))
    guard(server, engine).run(messages=USER, model="gpt-4.1")
    first, second = server.requests
    assert second.received_at - first.received_at >= 0.35


def test_retry_after_beyond_two_minutes_is_not_waited_for(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(429, retry_after=3600), turn.text("never"))
    with pytest.raises(openai.RateLimitError):
        guard(server, engine).run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 1


def test_backoff_knob_sets_the_least_wait(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(500), turn.error(500), turn.text("ok"))
    guard(server, engine, provider_retry_backoff_seconds=0.2, provider_retry_max_backoff_seconds=0.2,
          provider_retry_jitter_seconds=0.0).run(messages=USER, model="gpt-4.1")  # fmt: skip
    times = [r.received_at for r in server.requests]
    assert [b - a >= 0.18 for a, b in zip(times, times[1:])] == [True, True]


def test_backoff_schedule_follows_the_knobs() -> None:
    """The wait strategy itself: exponential from the base, capped, jitter bounded by its knob."""

    def waits(cfg: ResilienceConfig, n: int) -> list[float]:
        retrying = cfg.retrying()
        out = []
        for attempt in range(1, n + 1):
            state = type("S", (), {"attempt_number": attempt, "outcome": None})()
            out.append(float(retrying.wait(state)))  # type: ignore[arg-type]
        return out

    assert waits(ResilienceConfig(backoff_seconds=0.5, max_backoff_seconds=8, jitter_seconds=0), 6) == [
        0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # fmt: skip
    assert waits(ResilienceConfig(backoff_seconds=0.2, max_backoff_seconds=2.0, jitter_seconds=0), 6) == [
        0.2, 0.4, 0.8, 1.6, 2.0, 2.0]  # fmt: skip
    # jitter adds at most jitter_seconds on top of the (capped) exponential step
    steps = [0.2, 0.4, 0.8, 1.6] + [2.0] * 36
    for _ in range(5):
        jittered = waits(ResilienceConfig(backoff_seconds=0.2, max_backoff_seconds=2.0, jitter_seconds=0.15), 40)
        assert all(step <= w <= step + 0.15 for step, w in zip(steps, jittered)), jittered


def test_guard_passes_its_knobs_on() -> None:
    g = GuardedOpenAI(openai_api_key="k", engine=object(), provider_timeout_seconds=20, provider_max_retries=3,
                      provider_retry_backoff_seconds=0.2, provider_retry_max_backoff_seconds=2.0,
                      provider_retry_jitter_seconds=0.15, provider_circuit_breaker_failures=5,
                      provider_circuit_breaker_reset_seconds=30)  # fmt: skip
    assert g.resilience == ResilienceConfig(timeout_seconds=20, max_retries=3, backoff_seconds=0.2,
                                            max_backoff_seconds=2.0, jitter_seconds=0.15, breaker_failures=5,
                                            breaker_reset_seconds=30)  # fmt: skip
    assert (g.breaker.failures, g.breaker.reset_seconds) == (5, 30)
    assert g.client.max_retries == 0 and g.client.timeout == 20


# ---------------------------------------------------------------------------- circuit breaker


def test_circuit_opens_fails_fast_half_opens_and_closes(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(500), turn.error(503), turn.text("recovered"), turn.text("normal"))
    g = guard(server, engine, provider_max_retries=0, provider_circuit_breaker_failures=2,
              provider_circuit_breaker_reset_seconds=0.3)  # fmt: skip
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            g.run(messages=USER, model="gpt-4.1")
    assert g.breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        g.run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 2  # failing fast: nothing was sent
    assert isinstance(CircuitOpenError("x"), openai.OpenAIError)

    time.sleep(0.35)
    assert g.breaker.state == "half_open"
    assert g.run(messages=USER, model="gpt-4.1")["output_text"] == "recovered"  # the trial call
    assert g.breaker.state == "closed"
    assert g.run(messages=USER, model="gpt-4.1")["output_text"] == "normal"
    assert len(server.requests) == 4


def test_a_failed_trial_opens_the_circuit_again(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(500), turn.error(500), turn.text("ok"))
    g = guard(server, engine, provider_max_retries=0, provider_circuit_breaker_failures=1,
              provider_circuit_breaker_reset_seconds=0.3)  # fmt: skip
    with pytest.raises(openai.InternalServerError):
        g.run(messages=USER, model="gpt-4.1")
    time.sleep(0.35)
    with pytest.raises(openai.InternalServerError):
        g.run(messages=USER, model="gpt-4.1")  # the trial fails
    with pytest.raises(CircuitOpenError):
        g.run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 2
    time.sleep(0.35)
    assert g.run(messages=USER, model="gpt-4.1")["output_text"] == "ok"


def test_retries_count_towards_the_breaker(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(500), turn.error(500), turn.error(500), turn.text("never"))
    g = guard(server, engine, provider_max_retries=5, provider_circuit_breaker_failures=3,
              provider_circuit_breaker_reset_seconds=60)  # fmt: skip
    with pytest.raises(CircuitOpenError):
        g.run(messages=USER, model="gpt-4.1")
    assert len(server.requests) == 3


def test_client_errors_do_not_open_the_circuit(serve: Serve, engine: Engine) -> None:
    server = serve(turn.error(500), turn.error(400), turn.error(500), turn.text("ok"))
    g = guard(server, engine, provider_max_retries=0, provider_circuit_breaker_failures=2,
              provider_circuit_breaker_reset_seconds=60)  # fmt: skip
    for exc in (openai.InternalServerError, openai.BadRequestError, openai.InternalServerError):
        with pytest.raises(exc):
            g.run(messages=USER, model="gpt-4.1")
    assert g.breaker.state == "closed"  # the 400 proved the provider up and reset the count
    assert g.run(messages=USER, model="gpt-4.1")["output_text"] == "ok"


def test_breaker_disabled_by_default(serve: Serve, engine: Engine) -> None:
    server = serve(*[turn.error(500)] * 6, turn.text("ok"))
    g = guard(server, engine, provider_max_retries=0)
    for _ in range(6):
        with pytest.raises(openai.InternalServerError):
            g.run(messages=USER, model="gpt-4.1")
    assert g.run(messages=USER, model="gpt-4.1")["output_text"] == "ok"


def test_cancelled_trial_does_not_jam_the_circuit(serve: Serve, engine: Engine) -> None:
    """A half-open trial that is cancelled must let a later call try again (not fail fast forever)."""
    server = serve(turn.error(500), turn.text("slow").delayed(3), turn.text("ok"))

    async def main() -> str:
        g = guard(server, engine, cls=AsyncGuardedOpenAI, provider_max_retries=0,
                  provider_circuit_breaker_failures=1, provider_circuit_breaker_reset_seconds=0.2)  # fmt: skip
        with pytest.raises(openai.InternalServerError):
            await g.run(messages=USER, model="gpt-4.1")
        await asyncio.sleep(0.25)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(g.run(messages=USER, model="gpt-4.1"), timeout=0.3)  # the trial, cancelled
        result = await g.run(messages=USER, model="gpt-4.1")
        return str(result["output_text"])

    assert asyncio.run(main()) == "ok"


def test_breaker_unit_with_a_fake_clock() -> None:
    now = [100.0]
    b = CircuitBreaker(2, 10, clock=lambda: now[0])
    err = openai.APIConnectionError(request=sdk_request())
    b.before_call()
    b.on_failure(err)
    assert b.state == "closed"
    b.on_failure(err)
    assert b.state == "open"
    with pytest.raises(CircuitOpenError, match="retrying in 10.0s"):
        b.before_call()
    now[0] += 10
    assert b.state == "half_open"
    b.before_call()  # the one trial
    with pytest.raises(CircuitOpenError):
        b.before_call()  # others wait for it
    b.on_success()
    assert b.state == "closed"
    b.before_call()


# ---------------------------------------------------------------------------- tools and retries


def test_provider_retries_never_run_a_tool_twice(serve: Serve, engine: Engine) -> None:
    server = serve(
        turn.error(500),
        turn.function_call("refund_payment", {"order_id": "o", "amount": 1}, call_id="c1"),
        turn.error(503),
        turn.error(429),
        turn.text("done"),
    )
    counter = Counter()
    result = guard(server, engine, counter, provider_max_retries=3).run(messages=USER, model="gpt-4.1")
    assert counter.calls == 1 and result["output_text"] == "done"
    assert len(server.requests) == 5
    # the three attempts of turn 2 carried the same single output
    bodies = [r.json for r in server.requests[2:]]
    assert bodies[0] == bodies[1] == bodies[2]
    assert tool_outputs(bodies[0]) == {"c1": {"ok": True, "order_id": "o", "amount": 1.0}}
    assert len(result["execution"]["events"]) == 1


def test_provider_failure_after_a_tool_ran_leaves_one_recorded_execution(serve: Serve, engine: Engine,
                                                                        db_path: Path) -> None:  # fmt: skip
    """Once retries are exhausted the run raises; the tool ran once and its execution is recorded."""
    server = serve(turn.function_call("refund_payment", {"order_id": "o", "amount": 1}), turn.error(500),
                   turn.error(500))  # fmt: skip
    counter = Counter()
    with pytest.raises(openai.InternalServerError):
        guard(server, engine, counter, provider_max_retries=1).run(messages=USER, model="gpt-4.1")
    assert counter.calls == 1 and len(server.requests) == 3
    [row] = decision_rows(db_path)
    execution = engine.get_execution(row["request_id"])
    assert execution is not None and execution.status.value == "executed"
