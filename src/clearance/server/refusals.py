"""Refused requests (401, 403) in the audit trail, in bounded form.

Every refusal used to be one fsync'd, hash-chained event holding the whole URL path: a client
with no key could grow the store without limit and slow every decision behind its writes. Now a
refusal is keyed by status, client address, API key id (if any), method and route template
(never the raw path); the first ``PER_WINDOW`` of a key in a ``WINDOW`` are written as they
come, and the rest of that window become one event with their ``count`` when the window is
over (at that key's next refusal, or when the server stops). A flood costs a few rows a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PER_WINDOW", "WINDOW", "Refusals"]

log = logging.getLogger("clearance.server")

PER_WINDOW = 3
WINDOW = 60.0
#: Windows kept at once; past it, the oldest are summed up and forgotten.
MAX_KEYS = 10_000


class Refusals:
    def __init__(self, write: Callable[[Mapping[str, Any]], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._write, self._clock = write, clock
        self._lock = threading.Lock()
        # key -> [window start, written, held back, the latest held-back payload]
        self._windows: dict[tuple[Any, ...], list[Any]] = {}

    def note(self, payload: dict[str, Any]) -> None:
        """Audit one refusal (or count it towards its window's summary)."""
        key = (payload["status"], payload["client"], payload["key_id"], payload["method"], payload["route"])
        now = self._clock()
        due: list[dict[str, Any]] = []
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= WINDOW:
                if window is not None:
                    due += _summary(window)
                if window is None and len(self._windows) >= MAX_KEYS:
                    oldest = next(iter(self._windows))
                    due += _summary(self._windows.pop(oldest))
                window = self._windows[key] = [now, 0, 0, None]
            if window[1] < PER_WINDOW:
                window[1] += 1
                due.append({**payload, "count": 1})
            else:
                window[2] += 1
                window[3] = payload
        for event in due:
            self._audit(event)

    def flush(self) -> None:
        """Write what every window held back (the server stops)."""
        with self._lock:
            due = [s for w in self._windows.values() for s in _summary(w)]
            self._windows.clear()
        for event in due:
            self._audit(event)

    def _audit(self, event: Mapping[str, Any]) -> None:
        try:
            self._write(event)
        except Exception:  # noqa: BLE001 - the refusal stands even if it cannot be recorded
            log.exception("could not audit a refused request")


def _summary(window: list[Any]) -> list[dict[str, Any]]:
    held, payload = window[2], window[3]
    return [{**payload, "count": held, "reason": f"{held} more like this within {WINDOW:.0f} s: {payload['reason']}"}] if held else []
