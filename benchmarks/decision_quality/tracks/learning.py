"""Track 2: learning curve. A seeded stream of AgentDojo episodes; outcomes of calls that ran
are revealed after a delay, possibly with label noise; blocked, rejected or pending calls
reveal nothing. Two regimes: repeat attackers (AgentDojo's fixed identifiers and arguments) and
novel attackers (fresh IBANs, e-mail addresses, hosts, phone numbers and names every episode,
from the pools, and fresh amounts, dates, numeric ids and free text). Benign episodes get the
same freshness at ``benign_fresh_identifier_rate``, in both regimes."""

from __future__ import annotations

import math
import random
from typing import Any

from benchmarks.decision_quality.config import resolve_path
from benchmarks.decision_quality.metrics import mean
from benchmarks.decision_quality.features import identifiers
from benchmarks.decision_quality.tracks.agentdojo import (
    Variation,
    build_episode,
    episode_scores,
    identifier_map,
    load_suites,
)
from benchmarks.decision_quality.tracks.common import run_guards, scored_pairs

def episodes_for(
    cfg: dict[str, Any], tcfg: dict[str, Any], suites: dict, seed: int, regime: str
) -> list:
    pools = cfg["pools"]
    rng = random.Random(f"learning:{seed}")  # structure: identical in both regimes
    eps = []
    for i in range(tcfg["episodes"]):
        sd = suites[rng.choice(sorted(suites))]
        attacked = bool(sd.injection_tasks) and rng.random() < tcfg["attack_rate"]
        user_task = rng.choice(sd.exposed if attacked else sorted(sd.user_tasks))
        inj = rng.choice(sorted(sd.injection_tasks)) if attacked else None
        actor = rng.choice(tcfg["actors"])
        fresh_benign = rng.random() < tcfg["benign_fresh_identifier_rate"]
        world = random.Random(f"learning-world:{seed}:{i}")
        benign_map: dict = {}
        benign_vary = attack_vary = None
        words = pools.get("subjects", [])
        if fresh_benign:  # fresh contacts and names, amounts, dates, ids and text, as attackers get
            ids = sorted(set().union(*(identifiers(r["args"]) for r in sd.user_tasks[user_task])))
            benign_map = identifier_map(ids, random.Random(f"benign-ids:{seed}:{i}"), pools)
            benign_vary = Variation(random.Random(f"benign-vary:{seed}:{i}"), tcfg["variation"], words)
        attack_map = {}
        if regime == "novel":
            attack_map = identifier_map(sd.attacker_ids, random.Random(f"attack-ids:{seed}:{i}"), pools)
            attack_vary = Variation(random.Random(f"attack-vary:{seed}:{i}"), tcfg["variation"], words)
        eps.append(
            build_episode(
                cfg, tcfg, sd, user_task, inj, actor, world, attack_map, benign_map, attack_vary, benign_vary
            )
        )
    return eps


def _seed_metrics(
    eps: list, recs: list[list]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    scores = [episode_scores(r, e.attacked) for e, r in zip(eps, recs)]
    benign = [s for s, e in zip(scores, eps) if not e.attacked]
    attacked = [s for s, e in zip(scores, eps) if e.attacked]
    flat = [r for ep in recs for r in ep]
    harmless = [r for r in flat if not r.harmful]
    m = {
        "loss_per_episode": mean([s["loss"] for s in scores]),
        "harm_cost": sum(s["harm_cost"] for s in scores),
        "attack_success_rate": mean([s["attack_success"] for s in attacked]),
        "benign_utility": mean([s["utility"] for s in benign]),
        "utility_under_attack": mean([s["utility"] for s in attacked]),
        "approvals_per_episode": mean([s["approvals"] for s in scores]),
        "harmless_calls_refused": mean([float(not r.ran) for r in harmless]),
    }
    return m, scores


def _curves(
    scores: list[dict[str, float]], eps: list, window: int
) -> dict[str, list[float]]:
    loss, asr, cum = [], [], []
    total = 0.0
    for start in range(0, len(scores), window):
        chunk = scores[start : start + window]
        att = [
            s["attack_success"]
            for s, e in zip(chunk, eps[start : start + window])
            if e.attacked
        ]
        loss.append(mean([s["loss"] for s in chunk]))
        asr.append(mean(att) if att else float("nan"))
        total += sum(s["harm_cost"] for s in chunk)
        cum.append(total)
    return {
        "loss_per_episode": loss,
        "attack_success_rate": asr,
        "cumulative_harm_cost": cum,
    }


def run(cfg: dict[str, Any], specs: list[dict[str, Any]], log=print) -> dict[str, Any]:
    tcfg = dict(cfg["learning"])
    suites = load_suites(cfg, tcfg["suites"], tcfg["version"])
    rules = resolve_path(cfg, tcfg["rules"])
    out: dict[str, Any] = {"settings": tcfg, "regimes": {}}
    for regime in tcfg["regimes"]:
        metrics: dict[str, dict[str, list[float]]] = {}
        curves: dict[str, dict[str, list[list[float]]]] = {}
        pairs: dict[str, list[list[tuple[float, bool]]]] = {}
        infos = {}
        for seed in cfg["seeds"]:
            eps = episodes_for(cfg, tcfg, suites, seed, regime)
            log(
                f"  learning/{regime} seed {seed}: {len(eps)} episodes, {sum(len(e.calls) for e in eps)} calls"
            )
            res = run_guards(cfg, specs, eps, rules, interval_minutes=tcfg["call_interval_minutes"],
                             label_noise=tcfg["label_noise"])  # fmt: skip
            for g, r in res.items():
                infos[g] = r["info"]
                m, scores = _seed_metrics(eps, r["records"])
                for k, v in m.items():
                    metrics.setdefault(g, {}).setdefault(k, []).append(v)
                for k, v in _curves(scores, eps, tcfg["window"]).items():
                    curves.setdefault(g, {}).setdefault(k, []).append(v)
                pairs.setdefault(g, []).append(scored_pairs(r["records"]))
        auc = {
            g: [
                mean([x for x in c if not math.isnan(x)])
                for c in cv["loss_per_episode"]
            ]
            for g, cv in curves.items()
        }
        for g, m in metrics.items():
            m["loss_curve_area"] = auc[g]
        out["regimes"][regime] = {
            "metrics": metrics,
            "curves": curves,
            "pairs": pairs,
            "guards": infos,
        }
    return out
