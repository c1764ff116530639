"""Rate-limit counts kept in memory by a SQLite store, valid while its audit chain tip says so."""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

class UsageCounts:
    """Rate-limit counts kept in memory by a SQLite store, so that a decision need not count
    every slot of a busy actor's window (SQLite counts an index range row by row).

    It knows the ``usage`` table as of one audit chain tip (:attr:`tip`): every write appends to
    the chain, so a tip moved by writes it did not see (another process or engine) means stale
    counts, unused until reloaded. The store's transactions keep it current (slots added, tip
    moved); other slot changes (``keep_usage``, ``release_usage``) and rollbacks drop it all.
    Per (rule, actor, window length) it loads the window's holding slots once: ``at`` of the
    permanent ones in order, ``(at, expires_at)`` of reservations; a count then is a bisection,
    on the stored text form, as SQLite compares. Used only by serialised writers: no lock.
    """

    __slots__ = ("loads", "series", "tip", "to_text")

    #: Windows kept at most (one per rule, actor and window length in use).
    MAX_SERIES = 10_000

    def __init__(self, to_text: Any) -> None:
        self.to_text = to_text  # datetime -> its stored text
        self.tip: tuple[int, str] | None = None
        self.series: dict[tuple[str, str, Any], _Series] = {}
        self.loads = 0  # diagnostics

    def reset(self, tip: tuple[int, str] | None = None) -> None:
        self.tip = tip
        self.series.clear()

    def count(self, raw: sqlite3.Connection, rule_id: str, actor: str, since: datetime, now: datetime, cap: int | None) -> int:
        since_s, now_s = self.to_text(since), self.to_text(now)
        key = (rule_id, actor, now - since)
        series = self.series.get(key)
        if series is None or since_s < series.floor:  # first use, or the clock went back: load
            if series is None and len(self.series) >= self.MAX_SERIES:
                self.series.clear()  # many actors: start again rather than keep every one's window
            series = self.series[key] = _Series(since_s)
            self.loads += 1
            for at, expires in raw.execute(_HOLDING_SLOTS, (rule_id, actor, since_s)):
                series.add(at, expires)
        elif since_s > series.floor:  # the window moved on: forget what left it
            series.advance(since_s)
        n = len(series.ats) + sum(1 for at, expires in series.expiring if at > since_s and expires > now_s)
        return n if cap is None else min(n, cap)

    def added(self, rows: Sequence[dict[str, Any]]) -> None:
        for (rule_id, actor, _), series in self.series.items():
            for r in rows:
                if r["rule_id"] == rule_id and r["actor"] == actor:
                    expires = r.get("expires_at")
                    series.add(self.to_text(r["at"]), None if expires is None else self.to_text(expires))


#: The holding slots of a window, as they are stored (the count's filter on expiry is applied
#: in memory, where ``now`` is known).
_HOLDING_SLOTS = "SELECT at, expires_at FROM usage WHERE rule_id = ? AND actor = ? AND at > ? AND active IS 1"


class _Series:
    __slots__ = ("ats", "expiring", "floor")

    def __init__(self, floor: str) -> None:
        self.floor = floor  # every holding slot with at > floor is here
        self.ats: list[str] = []  # permanent slots (expires_at IS NULL), sorted
        self.expiring: list[tuple[str, str]] = []  # reservations: (at, expires_at)

    def add(self, at: str, expires: str | None) -> None:
        if at <= self.floor:
            return
        if expires is not None:
            self.expiring.append((at, expires))
        elif not self.ats or at >= self.ats[-1]:
            self.ats.append(at)
        else:
            bisect.insort(self.ats, at)

    def advance(self, floor: str) -> None:
        self.floor = floor
        del self.ats[: bisect.bisect_right(self.ats, floor)]
        if self.expiring:
            self.expiring = [e for e in self.expiring if e[0] > floor]
