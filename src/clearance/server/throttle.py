"""Failed authentication, rate-limited per client address and per key prefix.

A client that keeps presenting bad keys is answered 429 with ``Retry-After`` before its key is
looked up, so guessing costs the server a dictionary lookup, not a store read, an audit row or a
place in the decision path's queue. Failures are counted twice: per client address (one guesser)
and per key prefix, ``clr_<key id>`` (many addresses guessing one key's secret). Only failures
count, and a key that authenticated here recently is let through even when its address or
prefix is throttled (it is recognised by a digest, never by its prefix), so a flood neither
slows nor locks out a key's real owner. A throttled address is answered by the app's outermost
layer (:meth:`AuthThrottle.early`), before middleware, routing or the body. Counting is the ``limits`` library's fixed windows, in
memory: each replica counts its own.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import OrderedDict

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from clearance.engine.keys import PREFIX

__all__ = ["DEFAULT_PER_MINUTE", "AuthThrottle", "key_prefix"]

#: Failed authentications a client address may make with one key prefix in a minute.
DEFAULT_PER_MINUTE = 30
#: Recently authenticated keys remembered (as digests) so that throttling never locks them out.
GOOD_KEYS = 10_000
#: Throttled addresses remembered for the outermost layer (past it, the oldest is forgotten and
#: its requests are refused one layer later, by :func:`clearance.server.auth.identify`).
HOT_ADDRESSES = 100_000
#: The fixed window's length (a minute), with a second's margin for the library's clock.
_WINDOW_SECONDS = 61.0


def key_prefix(token: str) -> str:
    """The public part of a presented key: ``clr_<key id>`` (never the secret), else its first 8 characters."""
    if token.startswith(PREFIX):
        key_id, sep, _ = token[len(PREFIX):].partition("_")
        if sep:
            return (PREFIX + key_id)[:48]
    return token[:8]


class AuthThrottle:
    def __init__(self, per_minute: int | None = None) -> None:
        if per_minute is None:
            per_minute = int(os.environ.get("CLEARANCE_AUTH_FAILURES_PER_MINUTE") or DEFAULT_PER_MINUTE)
        self.per_minute = per_minute
        self._item = RateLimitItemPerMinute(per_minute)
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        #: digests of keys that authenticated here lately (bounded; oldest forgotten first)
        self._good: OrderedDict[bytes, None] = OrderedDict()
        #: addresses throttled now -> until when (monotonic): what :meth:`early` answers from
        self._hot: dict[str, float] = {}
        #: when the latest failure was counted (monotonic)
        self._failed_at = -math.inf

    def retry_after(self, client: str | None, token: str) -> int | None:
        """Seconds before this client may try this key again; None when it may now.

        Asked on every authenticated request, so the common answers come first and cheap: a key
        that authenticated here lately (its owner, recognised by the whole key, is never locked
        out by others' guesses), or no failure at all within a window."""
        if token and _digest(token) in self._good:
            return None
        if time.monotonic() - self._failed_at > _WINDOW_SECONDS:
            return None  # nothing failed within a window: no count can be over the limit
        waits = [self._wait(ids) for ids in self._ids(client, token)]
        return max((w for w in waits if w is not None), default=None)

    def failed(self, client: str | None, token: str) -> None:
        self._failed_at = time.monotonic()
        for ids in self._ids(client, token):
            self._limiter.hit(self._item, *ids)
        address = ("address", client or "-")
        wait = self._wait(address)
        if wait is not None:
            if len(self._hot) >= HOT_ADDRESSES:
                self._hot.pop(next(iter(self._hot)))
            self._hot[address[1]] = time.monotonic() + wait

    @property
    def throttling(self) -> bool:
        """Whether any address is throttled now (or was, until :meth:`early` next looks)."""
        return bool(self._hot)

    def early(self, client: str | None, token: str) -> int | None:
        """For the outermost layer: seconds to wait when this address is throttled and the key
        is not one known here; None (the common case, one dictionary lookup) otherwise."""
        until = self._hot.get(client or "-")
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            self._hot.pop(client or "-", None)
            return None
        if token and _digest(token) in self._good:
            return None
        return max(1, math.ceil(left))

    def succeeded(self, token: str) -> None:
        digest = _digest(token)
        self._good[digest] = None
        self._good.move_to_end(digest)
        if len(self._good) > GOOD_KEYS:
            self._good.popitem(last=False)

    def _wait(self, ids: tuple[str, str]) -> int | None:
        if self._limiter.test(self._item, *ids):
            return None
        reset = self._limiter.get_window_stats(self._item, *ids).reset_time
        return max(1, math.ceil(reset - time.time()))

    @staticmethod
    def _ids(client: str | None, token: str) -> tuple[tuple[str, str], ...]:
        return ("address", client or "-"), ("prefix", key_prefix(token))


def _digest(token: str) -> bytes:
    return hashlib.blake2b(token.encode(), digest_size=16).digest()
