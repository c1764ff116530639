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
        "ask_side_effects",
        {"name": "river_logreg+rules", "kind": "river_logreg", "rules": True},
    ],
    # The rules files state the dev world's costs; a config must score with the same ones.
    "costs": {"harm_default": 100.0, "harm_per_value": 1.0, "harm_value_cap": 5000.0, "benign_blocked": 10.0,
              "benign_value_blocked": 0.0, "approval": 2.0},
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
    "refund": {"calls": 40, "rules": str(RULES / "retail.yaml"),
               "costs": {"harm_default": 0.0, "harm_per_value": 1.0, "harm_value_cap": float("inf"), "benign_blocked": 5.0,
                         "benign_value_blocked": 0.1, "approval": 5.0}},
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
    assert set(tr["attacks"]["variants"]) == {"normal", "leave_out"}
    att = tr["attacks"]["variants"]["normal"]["metrics"]
    assert att["ask_side_effects"]["benign_calls_blocked"]["mean"] == 0.0
    assert att["ask_side_effects"]["harmful_stopped_after_warmup"]["mean"] > 0.5  # a reviewer catches most
    left = tr["attacks"]["variants"]["leave_out"]["metrics"]
    assert left["always_allow"]["attack_success_rate"]["mean"] == 1.0
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

    from clearance.policy.rules import CostPolicy

    g = ExactPrecedent("x", CostPolicy(harm=100, refused=10, review=2))
    a = Action(tool="send_money", arguments={"recipient": "DE1", "amount": 5})
    v = g.evaluate(a)
    assert v.result == "requires_approval"  # a 5% prior of a harm of 100 is worth a review
    for _ in range(3):
        g.report_outcome(v.request_id, True, 100.0, datetime(2025, 1, 1, tzinfo=timezone.utc))
        v = g.evaluate(a)
    assert v.result == "blocked"


def _episode(harmful_and_review: list[tuple[bool, float]]):
    from datetime import timedelta

    from benchmarks.decision_quality.sim import Call, Episode
    from clearance import Action

    return Episode([
        Call(Action(tool="send_money", arguments={"recipient": f"DE{i}", "amount": 10}), harmful=harmful,
             harm_cost=100.0, benign_value=0.0, delay=timedelta(hours=2), role="attack" if harmful else "benign",
             u_review=u_review, u_noise=1.0)
        for i, (harmful, u_review) in enumerate(harmful_and_review)
    ])  # fmt: skip


def test_a_reviewers_answer_is_reported_at_once_and_an_outcome_only_for_a_call_that_ran():
    """As in a deployment: a person's rejection or approval is known when given (the issue's
    "approvals and rejections count as evidence"); a rejected call never runs, so reports no
    outcome; an approved one reports its outcome after its delay."""
    from datetime import timedelta

    from benchmarks.decision_quality.protocol import Verdict
    from benchmarks.decision_quality.sim import SimClock, run_stream

    class Asks:
        def __init__(self):
            self.n, self.reports = 0, []

        def evaluate(self, action):
            self.n += 1
            return Verdict("requires_approval", 0.5, f"r{self.n}")

        def report_outcome(self, request_id, harmful, cost, at, *, reviewed=False):
            self.reports.append((request_id, harmful, cost, reviewed, at))

    guard, clock = Asks(), SimClock()
    start = clock.now
    # reviewer: attacks rejected below u 0.9, harmless calls below 0.05
    eps = [_episode([(True, 0.5), (True, 0.95), (False, 0.5), (False, 0.01)])]
    recs = run_stream(guard, eps, clock, interval=timedelta(hours=1), reviewer={"catch_rate": 0.9, "false_reject_rate": 0.05},
                      label_noise=0.0, costs={"approval": 2.0, "harm_default": 100.0, "benign_blocked": 10.0,
                                              "benign_value_blocked": 0.0})  # fmt: skip
    assert [r.ran for r in recs[0]] == [False, True, True, False]
    reviews = [(rid, harmful, cost, at - start) for rid, harmful, cost, reviewed, at in guard.reports if reviewed]
    assert reviews == [("r1", True, 0.0, timedelta(hours=1)), ("r2", False, 0.0, timedelta(hours=2)),
                       ("r3", False, 0.0, timedelta(hours=3)), ("r4", True, 0.0, timedelta(hours=4))]  # fmt: skip
    # outcomes come 2 h after a call ran, as the clock passes them: r2's (it ran at 2 h) before
    # r4 is decided; r3's is due at 5 h, after the stream ends; the rejected calls never report one
    outcomes = [(rid, harmful, at - start) for rid, harmful, _, reviewed, at in guard.reports if not reviewed]
    assert outcomes == [("r2", True, timedelta(hours=4))]
    assert [rid for rid, *_ in guard.reports] == ["r1", "r2", "r3", "r2", "r4"]


@needs_bench
def test_the_clearance_guard_takes_a_reviewers_answer_as_the_engine_takes_a_persons(tmp_path):
    from benchmarks.decision_quality.guards import ClearanceGuard
    from benchmarks.decision_quality.sim import SimClock
    from clearance import Action

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - id: ask\n    tool: send_money\n    effect: require_approval\n")
    clock = SimClock()
    guard = ClearanceGuard("c", rules, clock, learning=True, tmp_root=str(tmp_path))
    try:
        first = guard.evaluate(Action(tool="send_money", arguments={"recipient": "DE1", "amount": 10}))
        second = guard.evaluate(Action(tool="send_money", arguments={"recipient": "DE2", "amount": 10}))
        assert first.result == second.result == "requires_approval"
        guard.report_outcome(first.request_id, True, 0.0, clock.now, reviewed=True)
        guard.report_outcome(second.request_id, False, 0.0, clock.now, reviewed=True)
        eng = guard.engine
        statuses = {a.request_id: a.status.value for a in eng.list_approvals(None)}
        assert statuses == {first.request_id: "rejected", second.request_id: "approved"}
        guard.report_outcome(second.request_id, False, 0.0, clock.now)  # the approved call ran, fine
        assert [o.status.value for o in eng.outcomes(second.request_id)] == ["succeeded"]
    finally:
        guard.close()


# -- issue 15: a fair harness --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"pools": {"iban_countries": ["DE", False]}}, "pools.iban_countries.1: .*YAML read this value as false"),
        ({"learning": {"episodez": 3}}, "learning.episodez: unknown key"),
        ({"attacks": {"max_pairs": 3}}, "attacks.max_pairs: unknown key"),
        ({"refund": {"outcome_model": {"phase_a": {"bas": 0.1}}}}, "refund.outcome_model.phase_a.bas: unknown key"),
        ({"learning": {"episodes": "3"}}, "learning.episodes: .*integer"),
        ({"refund": {"split": "test"}}, "refund.split"),
        ({"guards": ["always_allow", {"kind": "river_logreg", "rulez": True}]}, "guards.1.rulez: unknown key"),
    ],
)
def test_config_errors_name_the_key(raw, where):
    with pytest.raises(ConfigError, match=where):
        load_config(raw)


def test_a_yaml_no_is_a_clear_error_not_a_type_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pools: {iban_countries: [DE, NO]}\n")
    with pytest.raises(ConfigError, match=r"iban_countries\.1.*quote it"):
        load_config(path)
    path.write_text("pools: {iban_countries: [DE, 'NO']}\nrefund: {split: dev}\n")
    cfg = load_config(path)
    assert cfg["pools"]["iban_countries"] == ["DE", "NO"] and cfg["refund"]["split"] == "dev"


def test_rules_and_learner_takes_the_stricter_verdict_and_both_hear_outcomes(tmp_path):
    from benchmarks.decision_quality.guards import ClearanceGuard, RulesAnd
    from benchmarks.decision_quality.protocol import Verdict
    from benchmarks.decision_quality.sim import SimClock
    from clearance import Action

    class Learner:
        kind = "fake"

        def __init__(self):
            self.heard = []

        def evaluate(self, action):
            return Verdict("requires_approval" if action.tool == "send_email" else "allowed", 0.1, f"l-{action.tool}")

        def report_outcome(self, request_id, harmful, cost, at, *, reviewed=False):
            self.heard.append((request_id, harmful, reviewed))

        def close(self):
            pass

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - id: no-deletes\n    tool: delete_file\n    effect: block\n")
    clock = SimClock()
    learner = Learner()
    guard = RulesAnd("g", ClearanceGuard("r", rules, clock, False, None, str(tmp_path)), learner)
    try:
        assert guard.evaluate(Action(tool="delete_file", arguments={})).result == "blocked"  # the rules
        asked = guard.evaluate(Action(tool="send_email", arguments={}))
        assert asked.result == "requires_approval"  # the learner
        assert guard.evaluate(Action(tool="get_balance", arguments={})).result == "allowed"
        guard.report_outcome(asked.request_id, False, 0.0, clock.now, reviewed=True)  # approved
        guard.report_outcome(asked.request_id, True, 100.0, clock.now)  # then it went badly
        assert learner.heard == [("l-send_email", False, True), ("l-send_email", True, False)]
    finally:
        guard.close()


def test_baselines_decide_by_the_same_expected_cost_procedure_as_the_engine():
    from benchmarks.decision_quality.guards import ToolPrior, cost_policy
    from clearance import Action
    from clearance.memory.reliability import cheapest

    costs = cost_policy(TINY["costs"])
    g = ToolPrior("t", 1.0, 9.0, costs)
    for value in (None, 50.0, 4000.0):
        v = g.evaluate(Action(tool="send_money", arguments={}, value=value))
        expected, _ = cheapest(0.1, costs.harm_of(value), costs.refused_of(value), costs.review, g.reviewer.catch,
                               g.reviewer.false_reject)  # fmt: skip
        assert v.result == expected
    assert costs.harm_of(10_000) == 100 + 5000  # capped as the config says


def test_no_guard_knows_a_fixed_list_of_top_level_domains():
    from benchmarks.decision_quality.features import identifiers

    found = identifiers({"url": "https://payments.example-bank.xyz/login", "note": "see cdn.files.museum"})
    assert ("host", "payments.example-bank.xyz") in found and ("host", "cdn.files.museum") in found


def test_rules_costs_must_be_the_worlds(tmp_path):
    from benchmarks.decision_quality.guards import make_guard
    from benchmarks.decision_quality.sim import SimClock

    cfg = load_config({**TINY, "costs": {**TINY["costs"], "approval": 3.0}})
    with pytest.raises(ConfigError, match="costs"):
        make_guard({"name": "c", "kind": "clearance", "learning": True}, cfg, RULES / "agentdojo.yaml", SimClock())


def test_benchmark_rules_files_state_costs_and_no_threshold():
    from clearance.policy import load_rules

    for path in sorted(RULES.rglob("*.yaml")) + sorted((RULES.parent / "family").rglob("*rules*.yaml")):
        rules = load_rules(path)
        assert rules.costs is not None, path
        layers = [rules.risk] + [d.risk for d in rules.domains.values()] + [r.risk for r in rules.rules]
        set_fields = {k for layer in layers if layer is not None for k, v in layer.model_dump().items() if v is not None}
        assert not set_fields, (path, set_fields)


@needs_data
def test_novel_regime_repeats_no_attack_call_and_benign_episodes_get_fresh_names():
    from benchmarks.decision_quality.tracks import learning
    from benchmarks.decision_quality.tracks.agentdojo import load_suites

    cfg = load_config({**TINY, "learning": {**TINY["learning"], "episodes": 200, "attack_rate": 0.5,
                                               "benign_fresh_identifier_rate": 0.5}})  # fmt: skip
    tcfg = dict(cfg["learning"])
    suites = load_suites(cfg, tcfg["suites"], tcfg["version"])
    eps = learning.episodes_for(cfg, tcfg, suites, 1, "novel")
    seen: dict[str, int] = {}
    for i, ep in enumerate(eps):
        for call in ep.calls:
            if call.role == "attack":
                key = call.action.tool + json.dumps(call.action.arguments, sort_keys=True)
                assert seen.setdefault(key, i) == i, key  # never seen in an earlier episode
    repeat = learning.episodes_for(cfg, tcfg, suites, 1, "repeat")
    users = {c.action.arguments.get("user") for ep in repeat for c in ep.calls if c.role == "benign"} - {None}
    base = {c.action.arguments.get("user") for ep in learning.episodes_for({**cfg, "learning": {**tcfg,
            "benign_fresh_identifier_rate": 0.0}}, {**tcfg, "benign_fresh_identifier_rate": 0.0}, suites, 1, "repeat")
            for c in ep.calls if c.role == "benign"} - {None}  # fmt: skip
    assert users - base  # fresh names for benign users too


@needs_data
def test_leave_out_scores_only_injection_tasks_never_seen_before():
    from benchmarks.decision_quality.config import attack_settings
    from benchmarks.decision_quality.tracks import attacks
    from benchmarks.decision_quality.tracks.agentdojo import load_suites

    cfg = load_config(TINY)
    tcfg = {**attack_settings(cfg), **{k: cfg["attacks"][k] for k in ("max_pairs_per_suite", "leave_out_share")}}
    tcfg["max_pairs_per_suite"] = None
    suites = load_suites(cfg, tcfg["suites"], tcfg["version"])
    order, start = attacks.plans(suites, tcfg, "leave_out", 3)
    trained = {(s, i) for s, _, i in order[:start] if i}
    tested = {(s, i) for s, _, i in order[start:] if i}
    assert tested and trained and not (trained & tested)


@needs_data
def test_refund_violations_are_no_more_novel_than_harmless_calls():
    from benchmarks.decision_quality.tracks import refund

    cfg = load_config({**TINY, "refund": {**TINY["refund"], "calls": 3000, "violation_rate": 0.1}})
    world = refund.World(cfg, "train")
    model = refund.PatternShiftFraud(cfg["refund"]["outcome_model"])
    eps = refund.stream_for(cfg, cfg["refund"], world, 1, model)
    seen: set[str] = set()
    novel = {"violation": [], "benign": []}
    for ep in eps:
        c = ep.calls[0]
        parties = {c.action.target} | ({c.action.arguments["payment_method_id"]}
                                       if c.action.arguments.get("payment_method_id") else set())  # fmt: skip
        if c.role in novel:
            novel[c.role].append(not parties <= seen)
        seen |= parties
    rate = {k: sum(v) / len(v) for k, v in novel.items()}
    assert len(novel["violation"]) > 100
    assert abs(rate["violation"] - rate["benign"]) < 0.12, rate


def test_the_development_family_is_twenty_worlds_each_stating_its_own_costs():
    from benchmarks.decision_quality.config import resolve_path
    from benchmarks.decision_quality.family import FAMILY_DIR, render_family, world_row
    from benchmarks.decision_quality.guards import check_costs, cost_policy
    from benchmarks.decision_quality.tracks.refund import refund_costs

    paths = sorted(FAMILY_DIR.glob("w*.yaml"))
    assert len(paths) == 20
    cfgs = [load_config(p) for p in paths]
    assert len({tuple(c["seeds"]) for c in cfgs}) == 20  # its own seeds
    for knob in (lambda c: c["learning"]["attack_rate"], lambda c: c["reviewer"]["catch_rate"],
                 lambda c: c["costs"]["approval"], lambda c: c["learning"]["label_noise"]):  # fmt: skip
        assert len({knob(c) for c in cfgs}) > 10  # every knob varies
    for c in cfgs:
        check_costs(resolve_path(c, c["learning"]["rules"]), cost_policy(c["costs"]))
        check_costs(resolve_path(c, c["refund"]["rules"]), cost_policy(refund_costs(c)))
    # The family report: a world is won only when the loss is the lowest, "separate" only when
    # the intervals do not overlap.
    def report(mine, other):
        metrics = {g: {"loss_per_episode": {"mean": m, "lo": lo, "hi": hi}} for g, (m, lo, hi) in
                   (("clearance_learning", mine), ("block_side_effects", other))}  # fmt: skip
        return {"config_name": "w", "tracks": {"learning": {"regimes": {"novel": {"metrics": metrics}}}}}
    rows = [world_row(report((5, 4, 6), (8, 7, 9))), world_row(report((5, 4, 7.5), (8, 7, 9))),
            world_row(report((9, 8, 10), (8, 7, 9)))]  # fmt: skip
    assert [(r["lowest"], r["separate"]) for r in rows] == [(True, True), (True, False), (False, False)]
    assert "lowest loss on 2 of 3 worlds, with separate 95% intervals on 1" in render_family(rows)


def test_record_cache_keys_never_cover_the_memory_under_development(tmp_path: Path) -> None:
    """DQ_RECORD_CACHE keeps the records of guards memory does not change: the key follows what
    the records depend on, and a learning clearance guard is never cached."""
    from datetime import timedelta

    from benchmarks.decision_quality.sim import Call, Episode
    from benchmarks.decision_quality.tracks.common import _cache_key
    from clearance import Action

    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules: []\n")
    cfg = {"costs": {"approval": 2.0}, "reviewer": {"catch_rate": 0.9}, "read_prefixes": ["get_"]}
    call = Call(Action(tool="send_money", arguments={"to": "x"}), True, 10.0, 0.0, timedelta(hours=1), "attack", 0.5, 0.5)
    eps = [Episode([call], attacked=True)]
    key = _cache_key(cfg, {"name": "t", "kind": "tool_prior"}, eps, rules, 5, 0.0)
    assert key == _cache_key(cfg, {"name": "t", "kind": "tool_prior"}, eps, rules, 5, 0.0)
    assert key != _cache_key({**cfg, "costs": {"approval": 3.0}}, {"name": "t", "kind": "tool_prior"}, eps, rules, 5, 0.0)
    assert key != _cache_key(cfg, {"name": "t", "kind": "tool_prior"}, eps, rules, 5, 0.1)
    assert _cache_key(cfg, {"name": "c", "kind": "clearance", "learning": True}, eps, rules, 5, 0.0) is None
    assert _cache_key(cfg, {"name": "c", "kind": "clearance", "learning": False}, eps, rules, 5, 0.0) is not None
