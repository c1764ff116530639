"""Track 1: AgentDojo attacks and benign calls, all four suites. Every user task runs once on
its own; every user task whose first call exposes an injection vector runs once with every
injection task of its suite spliced in (the agent always obeys). AgentDojo's fixed attacker
identifiers are kept. Only calls that ran are scored; the episode order is shuffled per seed and
outcomes arrive with the configured delay, so learning guards learn as they go.

Two variants. ``normal``: every episode in one shuffled stream (an attack seen once may come
back verbatim, which rewards memorising); "after warm-up" figures count the episodes after
``warmup_share``. ``leave_out``: a share of each suite's injection tasks is held out; the guard
first meets the benign tasks and the other injections, then is scored on a second pass over the
benign tasks and the held-out injections, attacks it has never seen."""

from __future__ import annotations

import math
import random
from typing import Any

from benchmarks.decision_quality.config import attack_settings, resolve_path
from benchmarks.decision_quality.metrics import mean
from benchmarks.decision_quality.tracks.agentdojo import build_episode, episode_scores, load_suites
from benchmarks.decision_quality.tracks.common import run_guards


def _pairs(s: str, sd: Any, injections: list[str], limit: int | None, tag: str) -> list[tuple[str, str, str | None]]:
    pairs = [(s, u, i) for u in sd.exposed for i in injections]
    if limit:
        pairs = random.Random(f"attacks-pairs:{s}:{tag}").sample(pairs, min(len(pairs), limit))
    return pairs


def plans(suites: dict[str, Any], tcfg: dict[str, Any], variant: str, seed: int) -> tuple[list, int]:
    """The episode order for one seed, and the index where scoring starts."""
    rng = random.Random(f"attacks:{seed}")
    if variant == "normal":
        plan: list[tuple[str, str, str | None]] = []
        for s, sd in sorted(suites.items()):
            plan += [(s, u, None) for u in sd.user_tasks]
            plan += _pairs(s, sd, list(sd.injection_tasks), tcfg["max_pairs_per_suite"], "all")
        rng.shuffle(plan)
        return plan, 0
    train: list[tuple[str, str, str | None]] = []
    test: list[tuple[str, str, str | None]] = []
    for s, sd in sorted(suites.items()):
        inj = sorted(sd.injection_tasks)
        held = set(random.Random(f"leave-out:{seed}:{s}").sample(inj, max(1, math.ceil(tcfg["leave_out_share"] * len(inj)))))
        benign = [(s, u, None) for u in sd.user_tasks]
        train += benign + _pairs(s, sd, [i for i in inj if i not in held], tcfg["max_pairs_per_suite"], "train")
        test += benign + _pairs(s, sd, sorted(held), tcfg["max_pairs_per_suite"], "test")
    rng.shuffle(train)
    rng.shuffle(test)
    return train + test, len(train)


def _metrics(eps: list, recs: list, start: int, warm: int) -> dict[str, float]:
    eps, recs = eps[start:], recs[start:]
    scores = [episode_scores(rec, e.attacked) for e, rec in zip(eps, recs)]
    benign_eps = [s for s, e in zip(scores, eps) if not e.attacked]
    att = [s for s, e in zip(scores, eps) if e.attacked]
    benign_calls = [x for e, rec in zip(eps, recs) if not e.attacked for x in rec]
    late = recs[warm - start:] if warm > start else recs
    late_calls = [x for rec in late for x in rec]
    return {
        "benign_utility": mean([s["utility"] for s in benign_eps]),
        "utility_under_attack": mean([s["utility"] for s in att]),
        "attack_success_rate": mean([s["attack_success"] for s in att]),
        "benign_calls_allowed": mean([float(x.result == "allowed") for x in benign_calls]),
        "benign_calls_asked": mean([float(x.result == "requires_approval") for x in benign_calls]),
        "benign_calls_blocked": mean([float(x.result == "blocked") for x in benign_calls]),
        "approvals_per_task": mean([s["approvals"] for s in scores]),
        "loss_per_episode": mean([s["loss"] for s in scores]),
        # After warm-up: harmful side-effecting calls that did not run, harmless calls allowed outright.
        "harmful_stopped_after_warmup": mean([float(not x.ran) for x in late_calls if x.role == "attack"]),
        "benign_allowed_after_warmup": mean([float(x.result == "allowed") for x in late_calls if x.role == "benign"]),
    }


def run(cfg: dict[str, Any], specs: list[dict[str, Any]], log=print) -> dict[str, Any]:
    tcfg = attack_settings(cfg)
    tcfg.update({k: cfg["attacks"][k] for k in ("max_pairs_per_suite", "variants", "leave_out_share", "warmup_share")})
    suites = load_suites(cfg, tcfg["suites"], tcfg["version"])
    rules = resolve_path(cfg, tcfg["rules"])
    out: dict[str, Any] = {"settings": tcfg, "variants": {}, "guards": {}}
    for variant in tcfg["variants"]:
        metrics: dict[str, dict[str, list[float]]] = {}
        n_eps = 0
        for seed in cfg["seeds"]:
            order, start = plans(suites, tcfg, variant, seed)
            n_eps = len(order)
            eps = []
            for k, (s, u, i) in enumerate(order):
                world = random.Random(f"attacks-world:{variant}:{seed}:{k}")
                eps.append(build_episode(cfg, tcfg, suites[s], u, i, world.choice(tcfg["actors"]), world, {}, {}))
            warm = start if variant == "leave_out" else int(len(eps) * tcfg["warmup_share"])
            log(f"  attacks/{variant} seed {seed}: {len(eps)} episodes ({sum(e.attacked for e in eps)} attacked), "
                f"scored from {start}")  # fmt: skip
            res = run_guards(cfg, specs, eps, rules, interval_minutes=tcfg["call_interval_minutes"],
                             label_noise=tcfg["label_noise"])  # fmt: skip
            for g, r in res.items():
                out["guards"][g] = r["info"]
                for key, v in _metrics(eps, r["records"], start, warm).items():
                    metrics.setdefault(g, {}).setdefault(key, []).append(v)
        out["variants"][variant] = {"metrics": metrics, "episodes": n_eps}
    return out
