"""The reliability suite's fixtures: its scale, and the counts each test records.

Every test here takes ``record`` (a :class:`Counts`) and adds what it did and saw: runs, kills,
acknowledged decisions, lost ones, double executions, tamperings tried and detected, 5xx
answers. At the end of each test its counts, outcome and duration are written to a JSON file:
``CLEARANCE_RELIABILITY_OUT`` when set, else ``reliability.json`` in the session's temp dir.
``benchmarks/reliability_table.py`` turns that file into the README's "Reliability" table.

``CLEARANCE_RELIABILITY_SCALE`` (default 1) multiplies the counts (kills, rounds, requests,
seconds) for a long run; the default runs the whole suite in about 45 s on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from counts import Counts


@pytest.fixture(scope="session")
def reliability_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("CLEARANCE_RELIABILITY_OUT")
    path = Path(env) if env else tmp_path_factory.getbasetemp() / "reliability.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[]\n")
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or report.failed:
        item.reliability_outcome = report.outcome  # type: ignore[attr-defined]
    return report


@pytest.fixture
def record(request: pytest.FixtureRequest, reliability_file: Path) -> Iterator[Counts]:
    counts = Counts(request.node.nodeid)
    started = time.monotonic()
    yield counts
    outcome = getattr(request.node, "reliability_outcome", "passed")
    rows = json.loads(reliability_file.read_text())
    rows.append(counts.row(outcome, time.monotonic() - started))
    reliability_file.write_text(json.dumps(rows, indent=1) + "\n")


@pytest.fixture(scope="session")
def forks() -> Iterator[Any]:
    """The session's fork launcher (``forks.py``)."""
    if not hasattr(os, "fork"):
        pytest.skip("the reliability suite forks its processes (os.fork), which this platform lacks")
    from forks import Forks

    launcher = Forks()
    yield launcher
    launcher.close()
