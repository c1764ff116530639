"""Decision-quality benchmark (issue 5): drives any guard through ``evaluate`` and
``report_outcome`` over seeded streams of tool calls and writes ``report.json`` plus plots.

Entry point: ``python -m benchmarks.decision_quality --config CONFIG --out DIR``.
Data is read from ``../shared/bench-data/`` (relative to the repository root), never copied here.
"""

from benchmarks.decision_quality.protocol import Guard, Verdict

__all__ = ["Guard", "Verdict"]
