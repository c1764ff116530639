"""A short soak: a ``clearance serve`` process under a few seconds of steady mixed traffic
(``benchmarks/soak.py``'s own flows: decisions, claims, executions, outcomes, approvals, reads)
answers every request as expected, and its memory stays within a bound. The long version is
``python benchmarks/soak.py`` (10 minutes by default)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from counts import SCALE, Counts

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import soak  # noqa: E402

pytestmark = pytest.mark.reliability

#: How much the server's memory may grow from just after warm-up to the end of the short soak.
RSS_GROWTH_BOUND_PCT = 25.0


def test_short_soak(forks: Any, tmp_path: Path, record: Counts) -> None:
    record.area, record.backend = "soak, clearance serve", "SQLite"
    db = str(tmp_path / "soak.db")
    keys = soak.make_keys(db)
    pid, url = forks.serve(db, tmp_path / "serve.log")
    seconds = 3.0 * SCALE
    try:
        seen = soak.drive(url, keys, seconds, rate=20, pid=pid)
    finally:
        forks.kill(pid)
    summary = seen.summary(warmup=min(60.0, seconds / 4))
    record.add(runs=1, requests=seen.requests, errors=seen.errors, answers_5xx=seen.answers_5xx)
    record.extra.update({k: summary[k] for k in ("p99_ms", "rss_growth_pct")})
    assert seen.flows == int(seconds * 20) and seen.requests > seen.flows
    assert seen.errors == 0, summary
    if Path(f"/proc/{pid}").exists() or seen.rss_kb:  # resident memory is read from Linux's /proc
        assert summary["rss_growth_pct"] is not None and summary["rss_growth_pct"] < RSS_GROWTH_BOUND_PCT, summary
