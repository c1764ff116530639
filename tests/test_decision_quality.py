"""The decision-quality benchmark harness (issue 5): its pure metrics, and a tiny end-to-end run
on the real engine (needs the ``bench`` extra and ../shared/bench-data; skipped otherwise)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.decision_quality import metrics
from benchmarks.decision_quality.config import ConfigError, load_config

DATA = ROOT.parent / "shared" / "bench-data"
RULES = ROOT / "benchmarks" / "decision_quality" / "configs" / "rules"


def test_brier_on_known_inputs():
    assert metrics.brier([0.0, 1.0], [0, 1]) == 0.0
    assert metrics.brier([1.0, 0.0], [0, 1]) == 1.0
    assert metrics.brier([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.25)
    assert metrics.brier([0.2, 0.9], [0, 1]) == pytest.approx((0.04 + 0.01) / 2)


def test_ece_and_reliability_on_known_inputs():
    # bin [0.1, 0.2): 4 calls at 0.1, 1 harmful -> gap 0.15; bin [0.9, 1.0]: 2 calls at 1.0, both harmful -> gap 0
    probs = [0.1, 0.1, 0.1, 0.1, 1.0, 1.0]
    labels = [0, 0, 0, 1, 1, 1]
    rel = metrics.reliability(probs, labels, bins=10)
    assert [(b["n"], b["harm_rate"]) for b in rel] == [(4, 0.25), (2, 1.0)]
    assert rel[-1]["hi"] == 1.0  # 1.0 falls in the last bin
    assert metrics.ece(probs, labels, bins=10) == pytest.approx(4 / 6 * 0.15)
    # a perfectly calibrated constant forecast has no calibration error
    assert metrics.ece([0.25] * 4, [1, 0, 0, 0]) == pytest.approx(0.0)


def test_auroc_on_known_inputs():
    assert metrics.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert metrics.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert metrics.auroc([0.5, 0.5, 0.5], [0, 1, 0]) == 0.5  # ties count half
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert math.isnan(metrics.auroc([0.1, 0.2], [0, 0]))


def test_bootstrap_interval_on_known_inputs():
    point, lo, hi = metrics.bootstrap_ci([3.0] * 5, resamples=200)
    assert (point, lo, hi) == (3.0, 3.0, 3.0)
    vals = [1.0, 2.0, 3.0, 4.0, 5.0]
    point, lo, hi = metrics.bootstrap_ci(vals, resamples=2000, seed=1)
    assert point == 3.0 and 1.0 <= lo < 3.0 < hi <= 5.0
    assert metrics.bootstrap_ci(vals, resamples=2000, seed=1) == (
        point,
        lo,
        hi,
    )  # seeded: reproducible
    assert all(math.isnan(x) for x in metrics.bootstrap_ci([]))


def test_config_rejects_unknown_keys_and_guards():
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config({"seedz": [1]})
    with pytest.raises(ConfigError, match="unknown kind"):
        load_config({"guards": ["oracle"]})
    cfg = load_config(ROOT / "benchmarks" / "decision_quality" / "configs" / "dev.yaml")
    assert len(cfg["seeds"]) >= 5 and "clearance" in {
        g["kind"] for g in cfg["guards"] if isinstance(g, dict)
    }


def test_verdict_protocol_validates():
    from benchmarks.decision_quality.protocol import Verdict

    with pytest.raises(ValueError):
        Verdict("maybe", None, "r1")
    with pytest.raises(ValueError):
        Verdict("allowed", 1.5, "r1")


# Skipped where the bench extra or the public data is missing, except under CI (which must not
# pass by skipping): there the test runs and fails on what is missing.
_BENCH_MISSING = [m for m in ("numpy", "matplotlib", "river") if importlib.util.find_spec(m) is None]
needs_bench = pytest.mark.skipif(
    bool(_BENCH_MISSING) and not os.environ.get("CI"),
    reason=f"the bench extra is not installed ({', '.join(_BENCH_MISSING)}; pip install -e '.[test]' brings it)",
)
needs_data = pytest.mark.skipif(
    not DATA.is_dir() and not os.environ.get("CI"), reason=f"bench data not found at {DATA}"
)

TINY = {
    "name": "tiny",
    "seeds": [1, 2],
    "bootstrap": {"resamples": 100, "seed": 0},
    "tracks": ["learning", "calibration", "refund", "attacks"],
    "guards": [
        {"name": "clearance_rules", "kind": "clearance", "learning": False},
        "always_allow",
        "always_ask",
        "block_side_effects",
        "tool_prior",
        "exact_precedent",
        "river_logreg",
    ],
    "pools": {
        "first_names": ["nora", "ivan"],
        "last_names": ["hale"],
        "email_domains": ["example.org"],
        "url_words": ["alpha", "beta"],
        "tlds": ["com"],
        "iban_countries": ["DE"],
    },
    "learning": {
        "episodes": 20,
        "window": 5,
        "rules": str(RULES / "agentdojo.yaml"),
        "value_args": {"send_money": "amount"},
        "target_args": ["recipient", "recipients", "url"],
    },
    "attacks": {"max_pairs_per_suite": 3},
    "refund": {"calls": 40, "rules": str(RULES / "retail.yaml")},
}


@needs_bench
@needs_data
def test_tiny_config_runs_end_to_end_on_the_real_engine(tmp_path):
    from benchmarks.decision_quality.runner import run

    report = run(dict(TINY), tmp_path / "out", log=lambda m: None)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["config_sha256"] == report["config_sha256"]
    assert saved["guards"]["clearance_rules"]["memory_class"] == "NullMemory"
    tr = saved["tracks"]
    assert set(tr) == {"learning", "calibration", "refund", "attacks"}
    for regime in ("repeat", "novel"):
        m = tr["learning"]["regimes"][regime]["metrics"]
        assert set(m) == {
            g if isinstance(g, str) else g["name"] for g in TINY["guards"]
        }
        # always-allow lets every attack through; block-side-effects stops the harmful calls
        assert m["always_allow"]["attack_success_rate"]["mean"] in (1.0, None)
        assert m["always_allow"]["benign_utility"]["mean"] == 1.0
        assert m["always_ask"]["approvals_per_episode"]["mean"] > 0
        assert (
            m["block_side_effects"]["harm_cost"]["mean"]
            <= m["always_allow"]["harm_cost"]["mean"]
        )
    att = tr["attacks"]["metrics"]
    assert att["always_allow"]["attack_success_rate"]["mean"] == 1.0
    assert att["always_allow"]["benign_calls_allowed"]["mean"] == 1.0
    assert att["block_side_effects"]["benign_calls_blocked"]["mean"] > 0
    ref = tr["refund"]["metrics"]
    assert ref["always_allow"]["harm_cost_prevented"]["mean"] == 0.0
    assert ref["always_ask"]["approvals_per_1000"]["mean"] == 1000.0
    cal = tr["calibration"]["refund"]["metrics"]
    assert (
        "tool_prior" in cal and "always_allow" not in cal
    )  # only guards that give a risk score
    assert all(0.0 <= v <= 1.0 for v in cal["tool_prior"]["brier"]["per_seed"])
    assert (tmp_path / "out" / "table.md").read_text().count("| clearance_rules |") >= 4
    assert any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())


@needs_bench
@needs_data
def test_results_depend_only_on_the_config(tmp_path):
    from benchmarks.decision_quality.runner import run

    cfg = {
        **TINY,
        "tracks": ["learning"],
        "guards": ["river_logreg", "exact_precedent"],
        "learning": {**TINY["learning"], "regimes": ["novel"]},
    }
    a = run(dict(cfg), tmp_path / "a", plots=False, log=lambda m: None)
    b = run(dict(cfg), tmp_path / "b", plots=False, log=lambda m: None)
    assert a["tracks"] == b["tracks"]
    other = run({**cfg, "seeds": [7, 8], "pools": {**cfg["pools"], "first_names": ["zed"], "iban_countries": ["FR"]}},
                tmp_path / "c", plots=False, log=lambda m: None)  # fmt: skip
    assert (
        other["tracks"]["learning"]["regimes"]["novel"]["metrics"]["river_logreg"][
            "loss_per_episode"
        ]["mean"]
        is not None
    )


def test_missing_data_is_a_clear_error(tmp_path):
    from benchmarks.decision_quality.data import DataMissing, agentdojo_calls

    with pytest.raises(DataMissing, match="bench-data"):
        agentdojo_calls({"data_dir": str(tmp_path / "nowhere")}, "banking")


def test_guard_sees_only_the_action():
    # the guard protocol's evaluate takes a clearance.Action: no task id, label or goal text fields exist on it
    from clearance import Action

    assert set(Action.model_fields) == {
        "tool",
        "arguments",
        "actor",
        "domain",
        "value",
        "target",
        "context",
        "trace_id",
    }
    from benchmarks.decision_quality.guards import ExactPrecedent

    g = ExactPrecedent("x", approval_above=0.3, block_above=0.7)
    a = Action(tool="send_money", arguments={"recipient": "DE1", "amount": 5})
    v = g.evaluate(a)
    assert v.result == "allowed"
    g.report_outcome(
        v.request_id, True, 100.0, datetime(2025, 1, 1, tzinfo=timezone.utc)
    )
    assert g.evaluate(a).result == "blocked"
