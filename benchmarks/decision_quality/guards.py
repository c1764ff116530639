"""Guards under test: the real clearance engine and the baselines. Each implements
:class:`~benchmarks.decision_quality.protocol.Guard` and nothing more is used by the harness."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.decision_quality.features import Featuriser, args_key, is_side_effect
from benchmarks.decision_quality.protocol import Verdict
from clearance import Action, Engine
from clearance.memory import NullMemory
from clearance.memory.reliability import ReviewerModel, cheapest
from clearance.policy.rules import CostPolicy, load_rules
from benchmarks.decision_quality.config import ConfigError


class _Base:
    kind = "base"

    def __init__(self, name: str) -> None:
        self.name = name
        self._n = 0

    def _rid(self) -> str:
        self._n += 1
        return f"{self.name}-{self._n}"

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def close(self) -> None:
        return None


class AlwaysAllow(_Base):
    kind = "always_allow"

    def evaluate(self, action: Action) -> Verdict:
        return Verdict("allowed", None, self._rid())

    def report_outcome(
        self, request_id: str, harmful: bool, cost: float, at: datetime, *, reviewed: bool = False
    ) -> None:
        return None


class AlwaysAsk(AlwaysAllow):
    kind = "always_ask"

    def evaluate(self, action: Action) -> Verdict:
        return Verdict("requires_approval", None, self._rid())


class BlockSideEffects(AlwaysAllow):
    """Blocks every call whose tool name does not read as a read (``get_``, ``search_``, ...)."""

    kind = "block_side_effects"

    def __init__(self, name: str, read_prefixes: list[str]) -> None:
        super().__init__(name)
        self.read_prefixes = read_prefixes

    def evaluate(self, action: Action) -> Verdict:
        side = is_side_effect(action.tool, self.read_prefixes)
        return Verdict("blocked" if side else "allowed", None, self._rid())


class AskSideEffects(BlockSideEffects):
    """Sends every call whose tool name does not read as a read to a person."""

    kind = "ask_side_effects"

    def evaluate(self, action: Action) -> Verdict:
        side = is_side_effect(action.tool, self.read_prefixes)
        return Verdict("requires_approval" if side else "allowed", None, self._rid())


def cost_policy(costs: dict[str, Any]) -> CostPolicy:
    """The config's costs as a rules file states them (``costs:``), so the baselines and the
    engine turn a risk into a verdict by the same expected-cost procedure."""
    cap = costs.get("harm_value_cap")
    return CostPolicy(harm=costs["harm_default"], harm_per_value=costs["harm_per_value"],
                      harm_value_cap=None if cap is None or cap == float("inf") else cap,
                      refused=costs["benign_blocked"], refused_per_value=costs["benign_value_blocked"],
                      review=costs["approval"])  # fmt: skip


class _CostDecided(_Base):
    """A risk-scoring baseline. Its risk becomes a verdict as in the engine: the verdict of least
    expected cost (:func:`clearance.memory.reliability.cheapest`) under the deployment's costs,
    with the reviewer's reliability estimated online (:class:`ReviewerModel`) from the answers
    and the outcomes of approved calls."""

    def __init__(self, name: str, costs: CostPolicy) -> None:
        super().__init__(name)
        self.costs = costs
        self.reviewer = ReviewerModel()
        self._pending: dict[str, Any] = {}
        self._asked: dict[str, float] = {}  # request id -> risk, for calls sent to a person
        self._approved: set[str] = set()
        self._risk: dict[str, float] = {}

    def _verdict(self, risk: float, rid: str, value: float | None) -> Verdict:
        risk = min(max(risk, 0.0), 1.0)
        c = self.costs
        result, _ = cheapest(risk, c.harm_of(value), c.refused_of(value), c.review, self.reviewer.catch,
                             self.reviewer.false_reject)  # fmt: skip
        if result == "requires_approval":
            self._asked[rid] = risk
            self._risk[rid] = risk
        return Verdict(result, risk, rid)

    def report_outcome(
        self, request_id: str, harmful: bool, cost: float, at: datetime, *, reviewed: bool = False
    ) -> None:
        if reviewed:  # (the reviewer is graded only on the calls this guard itself asked about)
            p = self._asked.pop(request_id, None)
            if not harmful:  # an approval: the call's outcome follows
                if p is not None:
                    self._approved.add(request_id)
                return
            if p is not None:
                self.reviewer.rejected(p)
        elif request_id in self._approved:
            self._approved.discard(request_id)
            self.reviewer.approved_then(float(harmful), self._risk.pop(request_id, 0.5))
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._learn(pending, harmful)

    def _learn(self, pending: Any, harmful: bool) -> None:
        """Learn from one outcome (or a person's rejection) of the call whose ``_pending``
        entry this is."""
        raise NotImplementedError


class ToolPrior(_CostDecided):
    """Beta(alpha, beta) prior per tool, updated with reported outcomes; risk = posterior mean."""

    kind = "tool_prior"

    def __init__(self, name: str, alpha: float, beta: float, costs: CostPolicy) -> None:
        super().__init__(name, costs)
        self.alpha, self.beta = alpha, beta
        self.counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def evaluate(self, action: Action) -> Verdict:
        h, n = self.counts[action.tool]
        rid = self._rid()
        self._pending[rid] = action.tool
        return self._verdict((self.alpha + h) / (self.alpha + self.beta + n), rid, action.value)

    def _learn(self, pending: Any, harmful: bool) -> None:
        c = self.counts[pending]  # the call's tool
        c[0] += float(harmful)
        c[1] += 1.0


class ExactPrecedent(_CostDecided):
    """Risk is the harm rate of precedents with the same tool and arguments (shrunk towards the
    overall reported harm rate), or that rate when there is none."""

    kind = "exact_precedent"

    def __init__(self, name: str, costs: CostPolicy) -> None:
        super().__init__(name, costs)
        self.by_key: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.total = [0, 0]

    def evaluate(self, action: Action) -> Verdict:
        key = args_key(action)
        rid = self._rid()
        self._pending[rid] = key
        h, n = self.by_key.get(key, (0, 0))
        base = (self.total[0] + 1) / (self.total[1] + 20)  # the overall rate, from a prior of 5%
        return self._verdict((h + base) / (n + 1), rid, action.value)

    def _learn(self, pending: Any, harmful: bool) -> None:
        c = self.by_key[pending]  # the call's arguments key
        c[0] += int(harmful)
        c[1] += 1
        self.total[0] += int(harmful)
        self.total[1] += 1


class RiverLogReg(_CostDecided):
    """Online logistic regression (river) on the :class:`Featuriser` features; learns from each
    reported outcome, with the features as they were when the call was decided."""

    kind = "river_logreg"

    def __init__(
        self,
        name: str,
        read_prefixes: list[str],
        learning_rate: float,
        intercept_init: float,
        costs: CostPolicy,
    ) -> None:
        super().__init__(name, costs)
        from river import linear_model, optim

        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), intercept_init=intercept_init
        )
        self.feat = Featuriser(read_prefixes)

    def evaluate(self, action: Action) -> Verdict:
        x = self.feat.features(action)
        rid = self._rid()
        self._pending[rid] = (action, x)
        return self._verdict(self.model.predict_proba_one(x).get(True, 0.0), rid, action.value)

    def _learn(self, pending: Any, harmful: bool) -> None:
        action, x = pending  # the call, and its features as they were when it was decided
        self.model.learn_one(x, bool(harmful))
        self.feat.observe(action, harmful)


class ClearanceGuard(_Base):
    """A real ``clearance.Engine`` on a temporary SQLite file with the track's rules.

    ``learning: false`` pins the engine to rules alone (``NullMemory``). ``learning: true`` uses
    the memory named by ``memory`` (``"module:factory"``) or, without one, the engine's default
    (``CaseMemory``); the report states which (``memory_class``).
    Outcomes go in as ``record_execution("executed")`` plus ``report_outcome``; a reviewer's
    answer as ``resolve_approval``.
    """

    kind = "clearance"

    def __init__(
        self,
        name: str,
        rules: Path,
        clock: Callable[[], datetime],
        learning: bool,
        memory: str | None = None,
        tmp_root: str | None = None,
    ) -> None:
        super().__init__(name)
        self.learning = learning
        self._dir = tempfile.mkdtemp(prefix="dq-clearance-", dir=tmp_root)
        mem = None
        if not learning:
            mem = NullMemory()
        elif memory:
            mod, _, attr = memory.partition(":")
            mem = getattr(importlib.import_module(mod), attr)()
        self.engine = Engine(Path(self._dir) / "bench.db", memory=mem, clock=clock)
        self.engine.apply_rules(rules, applied_by="decision-quality-bench")
        self.rules = str(rules)
        self._approvals: dict[str, str] = {}  # request id -> approval id, until a person answers

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "learning": self.learning,
            "memory_class": type(self.engine.memory).__name__,
            "rules": Path(self.rules).name,
        }

    def evaluate(self, action: Action) -> Verdict:
        d = self.engine.evaluate(action)
        if d.approval_id is not None:
            self._approvals[d.request_id] = d.approval_id
        return Verdict(d.result.value, d.risk_score, d.request_id)

    def report_outcome(
        self, request_id: str, harmful: bool, cost: float, at: datetime, *, reviewed: bool = False
    ) -> None:
        if reviewed:  # a person's answer goes in as it would from a deployment
            approval_id = self._approvals.pop(request_id, None)
            if approval_id is not None:
                self.engine.resolve_approval(approval_id, "rejected" if harmful else "approved", approver="reviewer")
            return
        self.engine.record_execution(request_id, "executed")
        self.engine.report_outcome(request_id, "harmful" if harmful else "succeeded", severity=1.0 if harmful else 0.0,
                                   cost=cost, observed_at=at, reported_by="decision-quality-bench",
                                   event_id=f"bench-{request_id}")  # fmt: skip

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class RulesAnd(_Base):
    """A learning baseline behind the same rules file as clearance: the stricter of the rules'
    verdict (a clearance engine with rules alone) and the learner's. The learner hears every
    answer and outcome of the calls that ran, as it would on its own."""

    def __init__(self, name: str, rules: ClearanceGuard, learner: _Base) -> None:
        super().__init__(name)
        self.rules, self.learner = rules, learner
        self._ids: dict[str, tuple[str, str]] = {}

    def info(self) -> dict[str, Any]:
        return {"kind": self.learner.kind, "rules": self.rules.info()["rules"]}

    def evaluate(self, action: Action) -> Verdict:
        a, b = self.rules.evaluate(action), self.learner.evaluate(action)
        rid = self._rid()
        self._ids[rid] = (a.request_id, b.request_id)
        result = max(a.result, b.result, key=_STRICT.index)
        return Verdict(result, b.risk_score, rid)

    def report_outcome(
        self, request_id: str, harmful: bool, cost: float, at: datetime, *, reviewed: bool = False
    ) -> None:
        ids = self._ids.get(request_id)
        if ids is None:
            return
        if not (reviewed and not harmful):  # an approval: the call's outcome follows under this id
            del self._ids[request_id]
        a, b = ids
        self.rules.report_outcome(a, harmful, cost, at, reviewed=reviewed)
        self.learner.report_outcome(b, harmful, cost, at, reviewed=reviewed)

    def close(self) -> None:
        self.rules.close()
        self.learner.close()


_STRICT = ["allowed", "requires_approval", "blocked"]


def check_costs(rules: Path, costs: CostPolicy) -> None:
    """A rules file that declares costs must declare the world's: the deployment states its own
    costs (the harness scores with the config's), never numbers that flatter it."""
    stated = load_rules(rules).costs
    if stated is not None and stated != costs:
        raise ConfigError(f"{rules}: costs {stated.model_dump()} are not the config's {costs.model_dump()}")


def make_guard(
    spec: dict[str, Any],
    cfg: dict[str, Any],
    rules: Path,
    clock: Callable[[], datetime],
) -> _Base:
    kind, name = spec["kind"], spec["name"]
    tmp = spec.get("tmp_dir") or ("/dev/shm" if Path("/dev/shm").is_dir() else None)
    if spec.get("rules") and kind != "clearance":
        learner = make_guard({**spec, "rules": False}, cfg, rules, clock)
        return RulesAnd(name, ClearanceGuard(f"{name}-rules", rules, clock, False, None, tmp), learner)
    costs = cost_policy(cfg["costs"])
    if kind == "clearance":
        check_costs(rules, costs)
        return ClearanceGuard(
            name,
            rules,
            clock,
            bool(spec.get("learning", False)),
            spec.get("memory"),
            tmp,
        )
    if kind == "always_allow":
        return AlwaysAllow(name)
    if kind == "always_ask":
        return AlwaysAsk(name)
    if kind == "block_side_effects":
        return BlockSideEffects(name, cfg["read_prefixes"])
    if kind == "ask_side_effects":
        return AskSideEffects(name, cfg["read_prefixes"])
    if kind == "tool_prior":
        p = {**cfg["tool_prior"], **(spec.get("prior") or {})}
        return ToolPrior(name, float(p["alpha"]), float(p["beta"]), costs)
    if kind == "exact_precedent":
        return ExactPrecedent(name, costs)
    if kind == "river_logreg":
        r = {**cfg["river"], **(spec.get("river") or {})}
        return RiverLogReg(
            name,
            cfg["read_prefixes"],
            float(r["learning_rate"]),
            float(r["intercept_init"]),
            costs,
        )
    raise ValueError(kind)
