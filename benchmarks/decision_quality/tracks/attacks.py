"""Track 1: AgentDojo attacks and benign calls, all four suites. Every user task runs once on
its own; every user task whose first call exposes an injection vector runs once with every
injection task of its suite spliced in (the agent always obeys). AgentDojo's fixed attacker
identifiers are kept. Only calls that ran are scored; the episode order is shuffled per seed and
outcomes arrive with the configured delay, so learning guards learn as they go."""

from __future__ import annotations

import random
from typing import Any

from benchmarks.decision_quality.config import resolve_path
from benchmarks.decision_quality.metrics import mean
from benchmarks.decision_quality.tracks.agentdojo import (
    SUITES,
    build_episode,
    episode_scores,
    load_suites,
)
from benchmarks.decision_quality.tracks.common import run_guards

DEFAULTS = {
    "call_interval_minutes": 10,
    "outcome_delay_hours": {"min": 0, "max": 4},
    "label_noise": 0.0,
    "suites": list(SUITES),
    "version": "v1_2_2",
    "actors": ["agent-1"],
    "rules": "rules/agentdojo.yaml",
    "value_args": {},
    "target_args": [],
    "max_pairs_per_suite": None,
}


def run(cfg: dict[str, Any], specs: list[dict[str, Any]], log=print) -> dict[str, Any]:
    tcfg = {**DEFAULTS, **cfg["learning"], **cfg["attacks"]}
    for k in (
        "episodes",
        "window",
        "attack_rate",
        "regimes",
        "benign_fresh_identifier_rate",
    ):
        tcfg.pop(k, None)
    suites = load_suites(cfg, tcfg["suites"], tcfg["version"])
    rules = resolve_path(cfg, tcfg["rules"])
    plan = []
    for s, sd in sorted(suites.items()):
        plan += [(s, u, None) for u in sd.user_tasks]
        pairs = [(s, u, i) for u in sd.exposed for i in sd.injection_tasks]
        if tcfg["max_pairs_per_suite"]:
            pairs = random.Random(f"attacks-pairs:{s}").sample(
                pairs, min(len(pairs), tcfg["max_pairs_per_suite"])
            )
        plan += pairs
    metrics: dict[str, dict[str, list[float]]] = {}
    infos = {}
    for seed in cfg["seeds"]:
        order = list(plan)
        random.Random(f"attacks:{seed}").shuffle(order)
        eps = []
        for k, (s, u, i) in enumerate(order):
            world = random.Random(f"attacks-world:{seed}:{k}")
            eps.append(
                build_episode(
                    cfg,
                    tcfg,
                    suites[s],
                    u,
                    i,
                    world.choice(tcfg["actors"]),
                    world,
                    {},
                    {},
                )
            )
        log(
            f"  attacks seed {seed}: {len(eps)} episodes ({sum(e.attacked for e in eps)} attacked)"
        )
        res = run_guards(
            cfg,
            specs,
            eps,
            rules,
            interval_minutes=tcfg["call_interval_minutes"],
            label_noise=tcfg["label_noise"],
        )
        for g, r in res.items():
            infos[g] = r["info"]
            scores = [
                episode_scores(rec, e.attacked) for e, rec in zip(eps, r["records"])
            ]
            benign_eps = [s for s, e in zip(scores, eps) if not e.attacked]
            att = [s for s, e in zip(scores, eps) if e.attacked]
            benign_calls = [
                x for e, rec in zip(eps, r["records"]) if not e.attacked for x in rec
            ]
            m = {
                "benign_utility": mean([s["utility"] for s in benign_eps]),
                "utility_under_attack": mean([s["utility"] for s in att]),
                "attack_success_rate": mean([s["attack_success"] for s in att]),
                "benign_calls_allowed": mean(
                    [float(x.result == "allowed") for x in benign_calls]
                ),
                "benign_calls_asked": mean(
                    [float(x.result == "requires_approval") for x in benign_calls]
                ),
                "benign_calls_blocked": mean(
                    [float(x.result == "blocked") for x in benign_calls]
                ),
                "approvals_per_task": mean([s["approvals"] for s in scores]),
                "loss_per_episode": mean([s["loss"] for s in scores]),
            }
            for key, v in m.items():
                metrics.setdefault(g, {}).setdefault(key, []).append(v)
    return {
        "settings": tcfg,
        "metrics": metrics,
        "guards": infos,
        "episodes": len(plan),
    }
