"""Provider resilience: retries on transient errors only, honouring Retry-After, and a breaker.

Retries apply to model requests, never to tool calls: a tool runs only after a response has
arrived, so no provider retry can run a tool twice. The SDK's own retries are turned off
(``max_retries=0``) so these knobs are the only ones in force.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from clearance.retry_after import retry_after_seconds as read_retry_after

__all__ = ["CircuitBreaker", "CircuitOpenError", "ResilienceConfig", "is_transient", "retry_after_seconds"]

#: A server asking us to wait longer than this is treated as not retryable (as the SDK does).
MAX_RETRY_AFTER = 120.0


class CircuitOpenError(openai.OpenAIError):
    """The provider failed too often in a row; calls fail fast until the reset time passes."""


def is_transient(exc: BaseException) -> bool:
    """Connection problems, timeouts, 429 and 5xx; never 4xx like a bad request or bad key."""
    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500
    return False


def retry_after_seconds(exc: BaseException) -> float | None:
    """What the provider's answer asked us to wait (see :mod:`clearance.retry_after`)."""
    response = getattr(exc, "response", None)
    return read_retry_after(getattr(response, "headers", None))


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, CircuitOpenError) or not is_transient(exc):
        return False
    wait = retry_after_seconds(exc)
    return wait is None or wait <= MAX_RETRY_AFTER


class _WaitRetryAfter:
    """Exponential backoff with jitter, but never shorter than what the server asked for."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, state: RetryCallState) -> float:
        backoff = float(self.base(state))
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc) if exc is not None else None
        return max(backoff, asked) if asked is not None else backoff


@dataclass(frozen=True)
class ResilienceConfig:
    timeout_seconds: float = 60.0
    max_retries: int = 2
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0
    jitter_seconds: float = 0.25
    breaker_failures: int = 0
    breaker_reset_seconds: float = 30.0

    def _kwargs(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(max(self.max_retries, 0) + 1),
            "wait": _WaitRetryAfter(wait_exponential(multiplier=self.backoff_seconds, max=self.max_backoff_seconds)
                                    + wait_random(0, self.jitter_seconds)),  # fmt: skip
            "retry": retry_if_exception(_retryable),
            "reraise": True,
        }

    def retrying(self) -> Retrying:
        return Retrying(**self._kwargs())

    def async_retrying(self) -> AsyncRetrying:
        return AsyncRetrying(**self._kwargs())


class CircuitBreaker:
    """Opens after ``failures`` consecutive transient failures; half-opens after ``reset_seconds``.

    Half-open lets one trial call through: success closes the circuit, failure opens it again.
    ``failures=0`` disables it.
    """

    def __init__(self, failures: int, reset_seconds: float, clock: Any = time.monotonic) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self.clock() - self._opened_at >= self.reset_seconds else "open"

    def before_call(self) -> None:
        if self.failures <= 0:
            return
        with self._lock:
            if self._opened_at is None:
                return
            waited = self.clock() - self._opened_at
            if waited < self.reset_seconds or self._trial:
                left = max(self.reset_seconds - waited, 0.0)
                raise CircuitOpenError(f"provider circuit is open after {self._consecutive} consecutive failures; "
                                       f"retrying in {left:.1f}s")  # fmt: skip
            self._trial = True

    @contextmanager
    def guarding(self) -> Iterator[None]:
        """Wrap one provider call (sync or awaited inside): refuse it while open, count its outcome."""
        self.before_call()
        try:
            yield
        except Exception as exc:
            self.on_failure(exc)
            raise
        except BaseException:  # cancelled or interrupted: release a half-open trial
            self.on_abandoned()
            raise
        self.on_success()

    def on_success(self) -> None:
        with self._lock:
            self._consecutive, self._opened_at, self._trial = 0, None, False

    def on_abandoned(self) -> None:
        """The call ended without an answer either way (cancelled, interrupted): it says nothing
        about the provider, but a half-open trial must not stay claimed, or no call would ever
        be let through again."""
        with self._lock:
            self._trial = False

    def on_failure(self, exc: BaseException) -> None:
        if self.failures <= 0:
            return
        if not is_transient(exc):
            self.on_success()  # the provider answered (say, a 400): it is up
            return
        with self._lock:
            self._consecutive += 1
            if self._trial or self._consecutive >= self.failures:
                self._opened_at, self._trial = self.clock(), False
