"""Memory at the server's start and stop: warm-up, periodic snapshots, the snapshot at shutdown.

``warmup="wait"`` (the default): the server accepts connections once memory is ready, loaded
from its snapshot or rebuilt from the audit log, logging a progress line meanwhile.
``warmup="rules"``: it answers at once; until memory is ready, calls are decided by rules alone
and their ``risk_summary`` says so. Every ``snapshot_seconds`` (and at a clean shutdown) memory
is saved beside the store when it learnt something since the last save, so the next start
loads it instead of rebuilding.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from clearance.engine import Engine

__all__ = ["DEFAULT_SNAPSHOT_SECONDS", "MemorySettings", "MemoryLifecycle"]

log = logging.getLogger("clearance.server")

DEFAULT_SNAPSHOT_SECONDS = 600.0
WARMUPS = ("wait", "rules")


@dataclass(frozen=True)
class MemorySettings:
    warmup: str = "wait"
    #: Seconds between snapshots (0: only at shutdown; None: never).
    snapshot_seconds: float | None = DEFAULT_SNAPSHOT_SECONDS

    @classmethod
    def resolve(cls, warmup: str | None = None, snapshot_seconds: float | None = None) -> MemorySettings:
        """Explicit values, else ``CLEARANCE_MEMORY_WARMUP`` and ``CLEARANCE_MEMORY_SNAPSHOT_SECONDS``
        (a negative number: never save one)."""
        w = (warmup or os.environ.get("CLEARANCE_MEMORY_WARMUP") or "wait").strip().lower()
        if w not in WARMUPS:
            raise ValueError(f"warm-up {w!r} is not one of: {', '.join(WARMUPS)}")
        if snapshot_seconds is None:
            raw = os.environ.get("CLEARANCE_MEMORY_SNAPSHOT_SECONDS", "").strip()
            try:
                snapshot_seconds = float(raw) if raw else DEFAULT_SNAPSHOT_SECONDS
            except ValueError:
                raise ValueError(f"CLEARANCE_MEMORY_SNAPSHOT_SECONDS={raw!r} is not a number") from None
        return cls(w, None if snapshot_seconds < 0 else snapshot_seconds)


class MemoryLifecycle:
    """Runs the warm-up and the snapshots of one server's engine."""

    def __init__(self, engine: Engine, settings: MemorySettings) -> None:
        self.engine, self.settings = engine, settings
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        eng = self.engine

        def progress(line: str) -> None:
            log.info(line)

        if self.settings.warmup == "rules" and not eng.memory_warm:
            eng.rules_only_while_warming = True
            log.info("memory: warming up in the background; until it is ready, calls are decided by rules alone")
            self._tasks.append(asyncio.create_task(self._warm(progress)))
        else:
            await asyncio.to_thread(eng.warm_memory, progress)
        if self.settings.snapshot_seconds:
            self._tasks.append(asyncio.create_task(self._every(self.settings.snapshot_seconds)))

    async def _warm(self, progress: object) -> None:
        try:
            await asyncio.to_thread(self.engine.warm_memory, progress)  # type: ignore[arg-type]
        except Exception:  # pragma: no cover - logged; decisions stay rules-only
            log.exception("memory: warm-up failed; calls are decided by rules alone")

    async def _every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._save()

    async def _save(self) -> None:
        try:
            await asyncio.to_thread(self.engine.save_memory_snapshot, if_changed=True)
        except Exception:  # a full disk must not stop the server; the next start rebuilds
            log.exception("memory: snapshot not saved")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.settings.snapshot_seconds is not None and self.engine.memory_warm:
            await self._save()  # a clean shutdown leaves the next start a snapshot
