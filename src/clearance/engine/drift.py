"""The engine's drift watch: each reported outcome feeds :mod:`clearance.memory.drift`, and an
alert becomes a ``drift.detected`` event in the audit chain (so the webhook sender and the
dashboard see it), in the outcome's own transaction.

The monitor reads the record's outcomes in audit order up to the one being reported, so every
process (each with its own monitor) computes the same streams; only the process that records the
outcome that tips a stream writes its alert. A transaction that fails drops the monitor, which
reads the record again on the next outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from clearance.engine import audit
from clearance.engine.backtest import BAD
from clearance.memory.drift import DriftAlert, DriftMonitor, DriftSettings
from clearance.store import SqlTx
from clearance.store.history import outcome_events

__all__ = ["DriftWatch"]


class DriftWatch:
    def __init__(self, settings: DriftSettings) -> None:
        self.settings = settings
        self._monitor = DriftMonitor(settings)
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Start over from the record (after a transaction that may not have committed)."""
        with self._lock:
            self._monitor = DriftMonitor(self.settings)

    def copy(self) -> DriftMonitor:
        """The streams as they are now, and the chain position they reflect (for a snapshot)."""
        with self._lock:
            m = self._monitor
            return DriftMonitor(m.settings, {k: replace(v) for k, v in m.streams.items()}, m.cursor)

    def adopt(self, monitor: DriftMonitor) -> None:
        """Start from ``monitor`` (a snapshot's streams) if nothing was read yet; :meth:`warm`
        then reads only the outcomes after its position."""
        with self._lock:
            if self._monitor.cursor == 0 and monitor.settings == self.settings:
                self._monitor = monitor

    def warm(self, tx: SqlTx) -> None:
        """Read the record's outcomes (outside any writer lock: a server does this at start, so
        the first outcome reported does not read the whole log under the lock)."""
        if not self.settings.enabled:
            return
        head = tx.chain_head()[0]
        with self._lock:
            monitor = self._monitor
            if monitor.cursor >= head:
                return
            for _, status, tool, actor, domain in outcome_events(tx, monitor.cursor):
                monitor.observe(tool, actor, domain, status in BAD)
            monitor.cursor = head

    def after_outcome(self, tx: SqlTx, decision: Mapping[str, Any], status: str, now: datetime) -> list[DriftAlert]:
        """Call right after the ``outcome.reported`` event is appended, in its transaction."""
        if not self.settings.enabled:
            return []
        seq = tx.chain_head()[0]  # the outcome's own event
        with self._lock:
            monitor = self._monitor
            if monitor.cursor < seq - 1:  # outcomes other engines (or processes) recorded: read silently
                for s, earlier, tool, actor, domain in outcome_events(tx, monitor.cursor, seq):
                    monitor.observe(tool, actor, domain, earlier in BAD)
            alerts = monitor.observe(decision["tool"], decision["actor"], decision["domain"], status in BAD)
            monitor.cursor = seq
        for alert in alerts:
            audit.append(tx, "drift.detected", {**alert.as_dict(), "method": "bernoulli_cusum",
                         "threshold": self.settings.threshold}, now=now, request_id=decision["request_id"],
                         trace_id=decision["trace_id"])  # fmt: skip
        return alerts
