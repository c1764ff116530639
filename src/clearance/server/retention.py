"""The server's retention setting: every hour, prune what is older than so many days.

``clearance serve --retention-days 90`` (or ``CLEARANCE_RETENTION_DAYS``) runs
``Engine.prune(now - 90 days)`` once an hour in the background (see
:mod:`clearance.engine.retention`); archives go beside a SQLite store, or to
``--archive-dir`` (``CLEARANCE_ARCHIVE_DIR``), which a PostgreSQL store needs. Of several
replicas each may prune: the store's writer lock makes one do it and the others find nothing left.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from clearance.engine import Engine

__all__ = ["RetentionSettings", "RetentionTask"]

log = logging.getLogger("clearance.server")


@dataclass(frozen=True)
class RetentionSettings:
    days: float | None = None  # None: keep everything
    archive_dir: str | None = None
    every_seconds: float = 3600.0

    @classmethod
    def resolve(cls, days: float | None = None, archive_dir: str | None = None) -> RetentionSettings:
        if days is None:
            raw = os.environ.get("CLEARANCE_RETENTION_DAYS", "").strip()
            try:
                days = float(raw) if raw else None
            except ValueError:
                raise ValueError(f"CLEARANCE_RETENTION_DAYS={raw!r} is not a number of days") from None
        if days is not None and not days >= 1:
            raise ValueError(f"retention must be at least 1 day (rate limits count the last one), not {days}")
        return cls(days, archive_dir or os.environ.get("CLEARANCE_ARCHIVE_DIR") or None)


class RetentionTask:
    def __init__(self, engine: Engine, settings: RetentionSettings) -> None:
        self.engine, self.settings = engine, settings
        self._task: asyncio.Task[None] | None = None
        if settings.days is not None and settings.archive_dir is None and engine.snapshots.place.path is None:
            raise ValueError("retention on a store that is not a SQLite file needs an archive folder (--archive-dir)")

    def start(self) -> None:
        if self.settings.days is not None:
            self._task = asyncio.create_task(self._run())

    def prune_once(self) -> None:
        days = self.settings.days
        assert days is not None
        archive = None
        if self.settings.archive_dir is not None:
            stamp = self.engine.clock().strftime("%Y%m%dT%H%M%S")
            archive = Path(self.settings.archive_dir) / f"clearance-archive-{stamp}.jsonl.gz"
        report = self.engine.prune(self.engine.clock() - timedelta(days=days), archive=archive)
        if report.archive is not None:
            log.info("retention: pruned up to event %d to %s", report.cut_seq, report.archive)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.prune_once)
            except Exception:  # a full disk must not stop the server; the next hour tries again
                log.exception("retention: prune failed")
            await asyncio.sleep(self.settings.every_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
