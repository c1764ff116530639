"""Rate-limit counts kept in memory by a SQLite store, valid while its audit chain tip says so."""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any


class UsageCounts:
    """Rate-limit counts kept in memory by a SQLite store, so that a decision need not count
    every slot of a busy actor's window (SQLite counts an index range row by row).

    It knows the ``usage`` table as of one audit chain tip (:attr:`tip`): every write appends to
    the chain, so a tip moved by writes it did not see (another process or engine) means stale
    counts, unused until reloaded. The store's transactions keep it current (slots added, kept
    for good, released; tip moved); rollbacks drop it all. Per (rule, actor, window length) it
    loads the window's holding slots once and keeps them as a :class:`_Series`, whose count is
    a number kept current as slots leave the window or expire, never a rescan, so a decision
    costs the same with twenty thousand pending approvals as with none. Used only by serialised
    writers: no lock.
    """

    __slots__ = ("by_who", "loads", "series", "tip", "to_text")

    #: Windows kept at most (one per rule, actor and window length in use).
    MAX_SERIES = 10_000

    def __init__(self, to_text: Any) -> None:
        self.to_text = to_text  # datetime -> its stored text
        self.tip: tuple[int, str] | None = None
        self.series: dict[tuple[str, str, Any], _Series] = {}
        self.by_who: dict[tuple[str, str], list[_Series]] = {}  # (rule, actor) -> its windows
        self.loads = 0  # diagnostics

    def reset(self, tip: tuple[int, str] | None = None) -> None:
        self.tip = tip
        self.series.clear()
        self.by_who.clear()

    def count(self, raw: sqlite3.Connection, rule_id: str, actor: str, since: datetime, now: datetime, cap: int | None) -> int:
        n = self._series(raw, rule_id, actor, since, now).live
        return n if cap is None else min(n, cap)

    def total(self, raw: sqlite3.Connection, rule_id: str, actor: str, since: datetime, now: datetime) -> float:
        """The values of the window's holding slots added up exactly, then rounded once (SQL's
        ``SUM`` adds in index order, rounding at each step: the two may differ in the last bit)."""
        return self._series(raw, rule_id, actor, since, now).cents / _SCALE

    def _series(self, raw: sqlite3.Connection, rule_id: str, actor: str, since: datetime, now: datetime) -> _Series:
        """The window of ``rule_id`` and ``actor`` from ``since``, brought up to ``now``."""
        since_s, now_s = self.to_text(since), self.to_text(now)
        key = (rule_id, actor, now - since)
        series = self.series.get(key)
        if series is None or since_s < series.floor or now_s < series.now:  # first use, or the clock went back: load
            if series is not None:
                self._forget(key)
            elif len(self.series) >= self.MAX_SERIES:  # many actors: the window used longest ago makes room
                self._forget(next(iter(self.series)))
            series = self.series[key] = _Series(since_s)
            self.by_who.setdefault((rule_id, actor), []).append(series)
            self.loads += 1
            for at, expires, value in raw.execute(_HOLDING_SLOTS, (rule_id, actor, since_s)):
                series.add(at, expires, value)
        else:  # used now: last to be forgotten
            del self.series[key]
            self.series[key] = series
        series.advance(since_s, now_s)
        return series

    def _forget(self, key: tuple[str, str, Any]) -> None:
        series = self.series.pop(key)
        windows = self.by_who[key[:2]]
        windows.remove(series)
        if not windows:
            del self.by_who[key[:2]]

    def added(self, rows: Sequence[dict[str, Any]]) -> None:
        """Slots the transaction inserted (rows as given to the ``usage`` table)."""
        to_text = self.to_text
        for r in rows:
            for series in self.by_who.get((r["rule_id"], r["actor"]), ()):
                expires = r.get("expires_at")
                series.add(to_text(r["at"]), None if expires is None else to_text(expires), r.get("value"))

    def kept(self, slots: Iterable[tuple[str, str, str, str | None, float | None]]) -> None:
        """Reservations an approval keeps for good: ``(rule_id, actor, at, expires_at, value)`` as stored."""
        for rule_id, actor, at, expires, value in slots:
            for series in self.by_who.get((rule_id, actor), ()):
                series.discard(at, expires, value)
                series.add(at, None, value)

    def released(self, slots: Iterable[tuple[str, str, str, str | None, float | None]]) -> None:
        """Slots that stop holding (rejected, expired, not run), as :meth:`kept` takes them."""
        for rule_id, actor, at, expires, value in slots:
            for series in self.by_who.get((rule_id, actor), ()):
                series.discard(at, expires, value)


#: The holding slots of a window, as they are stored (the count's filter on expiry is applied
#: in memory, where ``now`` is known).
_HOLDING_SLOTS = "SELECT at, expires_at, value FROM usage WHERE rule_id = ? AND actor = ? AND at > ? AND active IS 1"

#: The slots of one call that still hold, as :meth:`UsageCounts.kept` and ``released`` take them.
SLOTS_OF_REQUEST = "SELECT rule_id, actor, at, expires_at, value FROM usage WHERE request_id = ? AND active IS 1"

#: Values are kept as integers in units of 2**-1074, the smallest step between doubles, so that
#: adding and taking away are exact and a total is rounded once.
_SCALE = 1 << 1074


def _exact(value: float | None) -> int:
    if not value:
        return 0
    numerator, denominator = float(value).as_integer_ratio()  # the denominator is a power of two
    return numerator * (_SCALE // denominator)


class _Series:
    """The holding slots of one window, as a count and a total kept current. Both bounds only
    move forward (the window's start and ``now``; a clock that goes back reloads the series),
    so each slot leaves once: when the window's start passes it (a heap by ``at``), or, for a
    reservation, when its deadline passes (a heap by deadline over the same entries), or when
    the store releases it, whichever is first; entries are marked when they leave and dropped
    by the other heap when it reaches them. Adding, leaving and counting cost O(log n)
    amortised, with n the slots in the window."""

    __slots__ = ("by_at", "by_expiry", "cents", "floor", "live", "now", "open", "seq")

    def __init__(self, floor: str) -> None:
        self.floor = floor  # every holding slot with at > floor is here
        self.now = ""  # the latest ``now`` brought up to: reservations due by then have left
        self.by_at: list[tuple[str, int, list[Any]]] = []  # every slot: (at, seq, entry)
        self.by_expiry: list[tuple[str, int, list[Any]]] = []  # reservations: (expires_at, seq, entry)
        self.open: dict[tuple[str, str | None, int], list[list[Any]]] = {}  # (at, expires, value) -> entries counted
        self.live = 0  # slots still counted
        self.cents = 0  # their values added up, exactly (see _exact)
        self.seq = 0  # ties in the heaps never compare entries

    def add(self, at: str, expires: str | None, value: float | None) -> None:
        if at <= self.floor:
            return
        entry = [at, expires, _exact(value), True]  # at, expires_at, value, still counted
        self.seq += 1
        heapq.heappush(self.by_at, (at, self.seq, entry))
        if expires is not None:
            heapq.heappush(self.by_expiry, (expires, self.seq, entry))
        self.open.setdefault((at, expires, entry[2]), []).append(entry)
        self.live += 1
        self.cents += entry[2]

    def discard(self, at: str, expires: str | None, value: float | None) -> bool:
        """One slot ``(at, expires, value)`` stops counting; False if none was counted."""
        entries = self.open.get((at, expires, _exact(value)))
        if not entries:
            return False
        self._leave(entries[-1])
        return True

    def _leave(self, entry: list[Any]) -> None:
        key = (entry[0], entry[1], entry[2])
        entries = self.open[key]
        del entries[next(i for i, e in enumerate(entries) if e is entry)]  # by identity: equal entries abound
        if not entries:
            del self.open[key]
        entry[3] = False
        self.live -= 1
        self.cents -= entry[2]

    def advance(self, floor: str, now: str) -> None:
        if floor > self.floor:  # the window moved on: forget what left it
            self.floor = floor
            by_at = self.by_at
            while by_at and by_at[0][0] <= floor:
                entry = heapq.heappop(by_at)[2]
                if entry[3]:
                    self._leave(entry)
        self.now = now  # deadlines passed by now: those reservations stop counting
        by_expiry = self.by_expiry
        while by_expiry and by_expiry[0][0] <= now:
            entry = heapq.heappop(by_expiry)[2]
            if entry[3]:
                self._leave(entry)

    def count(self, floor: str, now: str) -> int:
        self.advance(floor, now)
        return self.live
