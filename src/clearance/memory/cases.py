"""The default learning memory: past calls with known outcomes, found by similarity.

Each decided call that was not blocked becomes a *case*. A case becomes a *precedent* once
something reveals how it went: a reported outcome (the real evidence) or, until one arrives, a
person's answer to its approval request (weaker evidence). Blocked calls and calls nobody
answered reveal nothing and are never counted as safe or as harmful.

The risk of a new call is a Beta-binomial estimate: its nearest precedents vote with weight
``similarity x recency x evidence strength``, shrunk towards a prior (the base rate of bad
outcomes among calls of the same shape class, from this tool and from the others, see
:meth:`CaseMemory.prior`), so that thin evidence gives an estimate near the prior and says how
little it rests on.

Memory is fed only from audit events, in order (:meth:`CaseMemory.ingest`): the live engine and
a rebuild from the store therefore see the same history, on SQLite and PostgreSQL alike, and
several processes sharing one store each learn everything the others record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from clearance.memory import RiskEstimate
from clearance.memory.features import DIM, Featuriser, Profile, _h
from clearance.memory.reliability import NoiseModel, ReviewerModel
from clearance.memory.index import VectorIndex, make_index
from clearance.model import Action, Precedent

__all__ = ["BAD_OUTCOMES", "CaseMemory"]

#: Outcome statuses that count as a call ending badly. A ``failed`` outcome counts as far as
#: its severity says (a failed read is not a harm; a failed payment that double-charged is).
BAD_OUTCOMES = frozenset({"harmful", "reverted"})

#: Evidence strength of a person's answer, relative to a reported outcome. The answer counts as
#: bad as far as the reviewer's estimated reliability says (a rejection of a call memory thought
#: safe, by a reviewer who refuses many good calls, is weak evidence of harm).
APPROVED_WEIGHT = 0.5
REJECTED_WEIGHT = 1.0

#: Decided calls whose outcome has not come in are kept, to be learnt from when it does, for
#: the newest MAX_WAITING decisions and for WAIT_DAYS after each (about 1 KB per call). The
#: outcome of an older call is still recorded and audited, but memory no longer learns from it.
#: What memory has learnt (calls with an outcome or a person's answer) is never forgotten this way.
MAX_WAITING = 1_000_000
WAIT_DAYS = 400.0

K = 16  # neighbours asked of the index
BANDWIDTH = 1.0  # similarity = exp(-squared distance / BANDWIDTH)
MIN_SIMILARITY = 0.05  # below it a neighbour is not a precedent at all
NOVEL_SIMILARITY = 0.3  # no precedent at least this similar: the call is novel
NOVEL_AFTER = 5  # a tool needs this many precedents before "novel" means anything
CITED = 5  # precedents a decision cites
RELATED_DISCOUNT = 0.5  # precedents of other tools in the same domain count this much
DISTANT_DISCOUNT = 0.3  # and those of other domains this much
EVIDENCE_CAP = 30.0  # weighed evidence gathered from the nearest shapes outwards, at most
PRIOR_STRENGTH = 5.0  # precedents' worth of weight each level of the prior carries
LOWER_Q = 0.1  # the risk's lower bound: its posterior's 10th percentile
PER_PROTO = 512  # newest cases of one prototype that are weighed (older ones count for little)


class _Case(NamedTuple):
    """A decided call, waiting for its outcome or learnt from.

    Memory keeps cases as plain tuples (``tuple(case)``) and reads them back with ``_make``:
    the garbage collector stops tracking a tuple of atoms (strings, numbers, times, arrays)
    once it has looked at it, whereas every object of a class stays on its lists for good, and
    each full collection (which holds the event loop) walks them all. A server keeps up to a
    million cases: with a million, half of them learnt from, a full collection took 566 ms as
    objects and 100 ms as plain tuples (40 ms of either is the modules). So a case is never
    changed in place: a label stores a new tuple."""

    request_id: str
    tool: str
    domain: str
    decided_at: datetime
    ids: tuple[tuple[str, str], ...]
    value: float | None
    vector: np.ndarray | None  # kept until the case is indexed
    shape: str  # its shape class (see :func:`_shape`), for the class-conditioned prior
    row: int = -1  # its row in the columns, once labelled
    bad: float | None = None  # 0..1 once anything is known
    weight: float = 0.0  # evidence strength of what is known
    outcome: str | None = None
    severity: float | None = None
    cost: float | None = None
    real: bool = False  # an outcome was reported (not only an approval answer)
    risk: float = 0.0  # memory's risk when it was decided (how a reviewer's answer is read)
    twin: int = 0  # key shared by identical calls (how often their reports disagree)
    approved: bool = False  # a person approved it (its outcome then grades the reviewer)


_TOOL, _DOMAIN, _DECIDED_AT, _BAD = (_Case._fields.index(f) for f in ("tool", "domain", "decided_at", "bad"))


class _Columns:
    """What a risk estimate reads of each precedent, one numpy column per field, so weighing
    a prototype's hundreds of cases is a few vector operations and a million precedents cost
    tens of bytes each rather than a Python object each."""

    def __init__(self) -> None:
        self.n = 0
        self.t = np.zeros(1024)  # decision time, days since the epoch
        self.w = np.zeros(1024)  # evidence strength
        self.bad = np.zeros(1024)
        self.tool = np.zeros(1024, dtype=np.int32)
        self.domain = np.zeros(1024, dtype=np.int32)

    def append(self, t: float, w: float, bad: float, tool: int, domain: int) -> int:
        if self.n == len(self.t):
            for name in ("t", "w", "bad", "tool", "domain"):
                old = getattr(self, name)
                grown = np.zeros(2 * len(old), dtype=old.dtype)
                grown[: self.n] = old
                setattr(self, name, grown)
        row = self.n
        self.t[row], self.w[row], self.bad[row], self.tool[row], self.domain[row] = t, w, bad, tool, domain
        self.n += 1
        return row


def _badness(status: str, severity: float) -> float:
    if status in BAD_OUTCOMES:
        return 1.0
    if status == "failed":
        return max(0.0, min(1.0, severity))
    return 0.0


def _money(v: float) -> str:
    return f"{v:,.2f}"


class CaseMemory:
    """Case memory with a nearest-neighbour index per tool and per domain."""

    learns = True

    def __init__(self, *, max_waiting: int = MAX_WAITING, wait_days: float = WAIT_DAYS) -> None:
        if max_waiting < 1 or not wait_days > 0:
            raise ValueError("max_waiting must be at least 1 and wait_days above 0")
        self.max_waiting, self.wait = max_waiting, wait_days * 86400.0  # seconds
        #: ``recall(request_id) -> (action, decision) | None``: the stored call, for an outcome
        #: that arrives after memory stopped waiting for it (the engine sets it; memory does no I/O).
        self.recall: Callable[[str], tuple[Any, Mapping[str, Any]] | None] | None = None
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (the engine then feeds the whole log again)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self.features = Featuriser()
        self.cursor = 0  # last audit event seq ingested
        self.cursor_hash: str | None = None  # and its hash, to notice a history that changed
        self._cases: dict[str, tuple[Any, ...]] = {}  # request id -> case (a plain tuple, see _Case)
        self._recent: deque[str] = deque()  # request ids of the newest decided calls, oldest first (see MAX_WAITING)
        self._cols = _Columns()
        self._row_case: list[tuple[Any, ...]] = []  # row -> case, for citing
        self._names: dict[str, int] = {}  # tool and domain names -> ids in the columns
        # A prototype: the precedents of one partition sharing a vector exactly. Calls of the
        # same shape usually do, and a search over single cases would return an arbitrary
        # handful of such ties instead of all of them. The index holds prototypes.
        self._members: dict[int, int | list[int]] = {}  # prototype key -> row(s), oldest first
        self._proto_of: dict[tuple[int, int], int] = {}  # (partition id, vector hash) -> prototype key
        self._parts: dict[tuple[str, str], VectorIndex] = {}
        self._part_ids: dict[tuple[str, str], int] = {}
        self._unindexed: dict[tuple[str, str], tuple[list[int], list[np.ndarray]]] = {}
        # Weighed precedents and their summed badness per tool, per shape class (across tools)
        # and per (tool, shape class): the levels of the prior.
        self._labelled: Counter[str] = Counter()
        self._decisions: Counter[str] = Counter()  # decided calls per tool, blocked ones too
        # And per tool family (tools named with the same verb: get_*, send_*), so a tool with
        # little history starts from what its family shows rather than the deployment's rate.
        self._labelled_family: Counter[str] = Counter()
        self._bad_family: Counter[str] = Counter()
        self._bad: Counter[str] = Counter()
        self._labelled_shape: Counter[str] = Counter()
        self._bad_shape: Counter[str] = Counter()
        self._labelled_ts: Counter[tuple[str, str]] = Counter()
        self._bad_ts: Counter[tuple[str, str]] = Counter()
        self._all = [0.0, 0.0]  # summed badness, precedents: the deployment's base rate
        self._next_key = 0
        self.revived = 0  # cases made again from the store for a late outcome
        # What memory learns about its evidence: reviewers' reliability, reports' noise.
        self.reviewer = ReviewerModel()
        self.noise = NoiseModel()
        # (action, vector, shape, profile, cursor, risk) of the last assess
        self._memo: tuple[Action, np.ndarray, str, Profile, int, float] | None = None

    # -- feeding --------------------------------------------------------------------------
    def ingest(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Learn from audit events (rows with ``seq``, ``type``, ``request_id`` and ``body``)
        in ``seq`` order; events at or below the cursor were seen already and are skipped."""
        with self._lock:
            for ev in events:
                seq = int(ev["seq"])
                if seq <= self.cursor:
                    continue
                self.cursor, self.cursor_hash = seq, ev.get("hash")
                kind = ev["type"]
                if kind == "decision.made":
                    # The engine hands its own fresh events over already parsed.
                    payload = ev.get("payload") or json.loads(ev["body"])["payload"]
                    action = payload["action"]
                    self._decided(action if isinstance(action, Action) else Action.model_validate(action),
                                  payload["decision"])  # fmt: skip
                elif kind == "outcome.reported":
                    p = json.loads(ev["body"])["payload"]
                    self._outcome(p["request_id"], p["status"], float(p.get("severity") or 0.0), float(p.get("cost") or 0.0))
                elif kind == "approval.resolved":
                    p = json.loads(ev["body"])["payload"]
                    self._answered(ev["request_id"], p["resolution"])
            self._flush()

    def _flush(self) -> None:
        """Add the prototypes made since the last flush to their indexes, in bulk (a rebuild
        adds thousands at a time)."""
        for part, (keys, vectors) in self._unindexed.items():
            index = self._parts.get(part)
            if index is None:
                index = self._parts[part] = make_index(DIM)
            if len(keys) == 1:
                index.add(keys[0], vectors[0])
            else:
                index.add_many(np.asarray(keys, dtype=np.uint64), np.stack(vectors))
        self._unindexed.clear()

    def _id(self, name: str) -> int:
        found = self._names.get(name)
        if found is None:
            found = self._names[name] = len(self._names)
        return found

    def _decided(self, action: Action, decision: Mapping[str, Any]) -> None:
        if decision["request_id"] in self._cases:
            return
        self._decisions[action.tool] += 1
        if decision["result"] == "blocked":
            return  # a blocked call never ran: it will reveal nothing
        if action.context.get("memory") is False:
            return  # its guard keeps it out of memory (memory_enabled=False): never a precedent
        memo, self._memo = self._memo, None
        # The vector assess() just computed for this very call, if nothing was learned since.
        if memo is not None and memo[0] is action and memo[4] == self.cursor - 1:
            vector, shape, profile, risk = memo[1], memo[2], memo[3], memo[5]
        else:
            raw, profile = self.features.vector(action)
            vector, shape = np.asarray(raw, dtype=np.float32), _shape(profile)
            risk = float(decision.get("risk_score") or 0.0)
        self.features.observe_call(action, profile)
        decided_at = decision["decided_at"]
        case = _Case(
            request_id=decision["request_id"], tool=action.tool, domain=action.domain,
            decided_at=decided_at if isinstance(decided_at, datetime) else datetime.fromisoformat(decided_at),
            ids=tuple(profile.ids), value=action.value,
            vector=vector, shape=shape, risk=risk,
            twin=_h(action.tool + "\x00" + "\x00".join(sorted(profile.tokens))),
        )  # fmt: skip
        self._cases[case.request_id] = tuple(case)
        self._forget_waiting(case)

    def _forget_waiting(self, newest: _Case) -> None:
        """Stop waiting for the outcomes of calls too old (in decisions or in days) to be worth
        the memory. Driven by the decisions alone, so a rebuild from the log forgets the same."""
        recent, cases = self._recent, self._cases
        recent.append(newest.request_id)
        horizon = newest.decided_at.timestamp() - self.wait  # timestamps: naive and aware times mix
        while recent and (len(recent) > self.max_waiting or cases[recent[0]][_DECIDED_AT].timestamp() < horizon):
            oldest = recent.popleft()
            if cases[oldest][_BAD] is None:  # still waiting (a learnt case stays)
                del cases[oldest]

    def _outcome(self, request_id: str, status: str, severity: float, cost: float) -> None:
        stored = self._cases.get(request_id)
        if stored is None:
            stored = self._revive(request_id)
            if stored is None:
                return
        case = _Case._make(stored)
        bad = _badness(status, severity)
        if not case.real:  # the call's first report: it grades the reports and the reviewer
            self.noise.add(case.twin, float(bad >= 0.5))
            if case.approved:
                self.reviewer.approved_then(bad, case.risk, self.noise.rate)
        if case.real and case.bad is not None:
            # A later outcome of the same call: keep the worst, as the call's final story.
            if bad < case.bad:
                return
            cost = max(cost, case.cost or 0.0)
        self._label(case, bad, 1.0, status, severity, cost, real=True)

    def _revive(self, request_id: str) -> tuple[Any, ...] | None:
        """A case memory stopped waiting for (see MAX_WAITING), made again from the stored call
        (``recall``, which the engine sets) and featurised with what memory knows now: its late
        outcome is learnt rather than lost. Only when the call was not blocked and not kept out
        of memory. Deterministic, so a rebuild from the log revives it the same way."""
        recall = self.recall
        found = recall(request_id) if recall is not None else None
        if found is None:
            return None
        action_data, decision = found
        if decision.get("result") == "blocked":
            return None
        action = action_data if isinstance(action_data, Action) else Action.model_validate(action_data)
        if action.context.get("memory") is False:
            return None
        raw, profile = self.features.vector(action)
        decided_at = decision["decided_at"]
        case = _Case(
            request_id=request_id, tool=action.tool, domain=action.domain,
            decided_at=decided_at if isinstance(decided_at, datetime) else datetime.fromisoformat(decided_at),
            ids=tuple(profile.ids), value=action.value, vector=np.asarray(raw, dtype=np.float32),
            shape=_shape(profile), risk=float(decision.get("risk_score") or 0.0),
            twin=_h(action.tool + "\x00" + "\x00".join(sorted(profile.tokens))),
        )  # fmt: skip
        self.revived += 1
        return tuple(case)

    def _answered(self, request_id: str, resolution: str) -> None:
        stored = self._cases.get(request_id)
        if stored is None:
            return
        case = _Case._make(stored)
        if case.real:
            return  # a reported outcome outranks a person's guess
        # An approval is read with the call's own risk. A rejection is read with at least the
        # share of bad calls among this tool's calls put to a person: it is the surprise that
        # says memory's own risk was too low, so that risk must not explain it away; but a tool
        # whose calls are rejected only as often as the reviewer refuses good ones is not bad
        # (read with every tool's share, wrongly refused reads counted as harm).
        if resolution in ("approved", "rejected"):
            self.reviewer.answered(resolution == "rejected", case.tool)
        if resolution == "approved":
            bad = self.reviewer.bad_if_approved(case.risk)
            self._label(case._replace(approved=True), bad, APPROVED_WEIGHT, "approved", None, None, real=False)
        elif resolution == "rejected":
            bad = self.reviewer.bad_if_rejected(max(case.risk, self.reviewer.asked_bad(case.tool)))
            self.reviewer.rejected(case.risk)
            self._label(case, bad, REJECTED_WEIGHT, "rejected", None, None, real=False)

    def _label(self, case: _Case, bad: float, weight: float, outcome: str, severity: float | None,
               cost: float | None, *, real: bool) -> None:  # fmt: skip
        if case.bad is not None:  # relabel: take the old label out of the base rates
            self._count(case, -case.weight, -case.weight * case.bad)
            self._all[0] -= case.weight * case.bad
            self._all[1] -= case.weight
        cols = self._cols
        row = case.row
        if row >= 0:
            cols.w[row], cols.bad[row] = weight, bad
        else:
            vector = case.vector
            assert vector is not None
            row = cols.append(case.decided_at.timestamp() / 86400.0, weight, bad, self._id(case.tool),
                              self._id(case.domain))  # fmt: skip
            self._row_case.append(())  # the labelled case, stored below
            sig = _h_bytes(vector.tobytes())  # stable across processes: snapshots keep it
            for part in (("tool", case.tool), ("domain", case.domain), ("all", "")):
                pid = self._part_ids.setdefault(part, len(self._part_ids))
                key = self._proto_of.get((pid, sig))
                if key is None:
                    key = self._proto_of[(pid, sig)] = self._next_key
                    self._next_key += 1
                    self._members[key] = row
                    keys, vectors = self._unindexed.setdefault(part, ([], []))
                    keys.append(key)
                    vectors.append(vector)
                else:
                    m = self._members[key]
                    if isinstance(m, int):
                        self._members[key] = [m, row]
                    else:
                        m.append(row)
        # The vector is in the index now; the case keeps what citing it and relabelling need.
        case = case._replace(row=row, vector=None, bad=bad, weight=weight, outcome=outcome, severity=severity,
                             cost=cost, real=real)  # fmt: skip
        self._cases[case.request_id] = self._row_case[row] = tuple(case)
        self._count(case, weight, weight * bad)
        self._all[0] += weight * bad
        self._all[1] += weight
        if real:
            self.features.observe_label(case.tool, case.ids, case.value, bad=bad >= 0.5)

    def _count(self, case: _Case, weight: float, bad: float) -> None:
        self._labelled[case.tool] += weight
        self._bad[case.tool] += bad
        family = _family(case.tool)
        self._labelled_family[family] += weight
        self._bad_family[family] += bad
        self._labelled_shape[case.shape] += weight
        self._bad_shape[case.shape] += bad
        self._labelled_ts[(case.tool, case.shape)] += weight
        self._bad_ts[(case.tool, case.shape)] += bad

    # -- judging --------------------------------------------------------------------------
    def prior(self, tool: str, shape: str | None = None, error_rate: float = 0.0) -> float:
        """The rate of bad outcomes for calls like this one before any neighbour is weighed.

        Without ``shape``: the tool's own rate, shrunk towards its family's (tools whose names
        start with the same verb), shrunk towards the deployment's (itself shrunk towards 5%),
        so a tool with little history starts from what its kin and then the others show. With the
        call's shape class, two disjoint bodies of experience are combined (their odds multiply,
        relative to the deployment's): this tool's calls of other shapes, and other tools'
        calls of this shape; the tool's own calls of this shape then refine that. So a shape that
        goes badly everywhere (payments to counterparties nobody paid before, say) is suspect
        in a tool that never saw one, and no precedent is counted twice.

        With ``error_rate`` (the share of outcome reports believed wrong) each count of bad
        outcomes is corrected for the reports that were wrong: the rate of real harm, not of
        reported harm."""
        e = error_rate
        overall = (_true_bad(self._all[0], self._all[1], e) + 1.0) / (self._all[1] + 20.0)

        def rate(bad: float, n: float, towards: float) -> float:
            n = max(n, 0.0)
            return (_true_bad(max(bad, 0.0), n, e) + PRIOR_STRENGTH * towards) / (n + PRIOR_STRENGTH)

        def own(bad: float, n: float, towards: float) -> float:  # one tool's: fewer reports, see _posterior
            return _posterior(bad, n, towards, PRIOR_STRENGTH, e)[0]

        family = _family(tool)
        # The tool's family, without the tool itself (its own calls are weighed below it).
        kin = rate(self._bad_family[family] - self._bad[tool], self._labelled_family[family] - self._labelled[tool],
                   overall)  # fmt: skip
        if shape is None:
            return own(self._bad[tool], self._labelled[tool], kin)
        bad_ts, n_ts = self._bad_ts[(tool, shape)], self._labelled_ts[(tool, shape)]
        other_shapes = own(self._bad[tool] - bad_ts, self._labelled[tool] - n_ts, kin)
        other_tools = rate(self._bad_shape[shape] - bad_ts, self._labelled_shape[shape] - n_ts, overall)
        mixed = _from_odds(_odds(other_shapes) * _odds(other_tools) / _odds(overall))
        return own(bad_ts, n_ts, mixed)

    def assess(
        self,
        action: Action,
        now: datetime,
        *,
        half_life_days: float = 90.0,
        prior: float | None = None,
        prior_strength: float = 2.0,
        outcome_error_rate: float | None = None,
    ) -> RiskEstimate:
        """``outcome_error_rate`` None: the share of wrong reports is memory's own estimate."""
        with self._lock:
            self._flush()
            vector, profile = self.features.vector(action)
            q = np.asarray(vector, dtype=np.float32)
            shape = _shape(profile)
            if outcome_error_rate is None:
                outcome_error_rate = self.noise.rate
            today = now.timestamp() / 86400.0
            evidence = bad = 0.0
            best_sim = 0.0
            cands: list[tuple[float, float, int, int, float]] = []  # similarity, evidence, prototype, level, badness
            cols = self._cols
            tool_id, domain_id = self._names.get(action.tool, -1), self._names.get(action.domain, -1)
            for level, (part, discount) in enumerate(((("tool", action.tool), 1.0),
                                                      (("domain", action.domain), RELATED_DISCOUNT),
                                                      (("all", ""), DISTANT_DISCOUNT))):  # fmt: skip
                index = self._parts.get(part)
                if index is None:
                    continue
                for key, d2 in index.search(q, K):
                    sim = math.exp(-max(d2, 0.0) / BANDWIDTH) * discount
                    if sim < MIN_SIMILARITY:
                        continue
                    m = self._members[key]
                    if isinstance(m, int):  # most prototypes hold one case: plain arithmetic
                        if level and (cols.tool[m] == tool_id or (level == 2 and cols.domain[m] == domain_id)):
                            continue  # weighed in a nearer partition already
                        ev = sim * cols.w[m] * 2.0 ** (-max(today - cols.t[m], 0.0) / half_life_days)
                        b_sum = ev * cols.bad[m]
                    else:
                        rows = np.asarray(m[-PER_PROTO:])
                        w = sim * cols.w[rows] * np.exp2(-np.maximum(today - cols.t[rows], 0.0) / half_life_days)
                        if level:
                            nearer = cols.tool[rows] == tool_id
                            if level == 2:
                                nearer |= cols.domain[rows] == domain_id
                            w[nearer] = 0.0
                        ev = float(w.sum())
                        b_sum = float((w * cols.bad[rows]).sum())
                    if ev <= 0.0:
                        continue
                    best_sim = max(best_sim, sim)
                    cands.append((sim, float(ev), key, level, float(b_sum)))
            # Nearest shapes first, until EVIDENCE_CAP is reached: where the very same shape has
            # plenty of history, merely similar shapes do not blur it (an adaptive bandwidth).
            cands.sort(key=lambda c: -c[0])
            for i, (_, ev, _, _, b_sum) in enumerate(cands):
                take = min(1.0, (EVIDENCE_CAP - evidence) / ev)
                evidence += take * ev
                bad += take * b_sum
                if evidence >= EVIDENCE_CAP - 1e-9:
                    del cands[i + 1 :]
                    break
            base = self.prior(action.tool, shape, outcome_error_rate) if prior is None else prior
            risk, risk_lo = _posterior(bad, evidence, base, prior_strength, outcome_error_rate, LOWER_Q)
            precedents = self._cite(cands, action)
            novel = self._labelled[action.tool] >= NOVEL_AFTER and best_sim < NOVEL_SIMILARITY
            risk = min(max(risk, 0.0), 1.0)
            self._memo = (action, q, shape, profile, self.cursor, risk)
            # What is at stake: the call's value, or else what similar calls cost when they went badly.
            costs = [p.cost for p in precedents if p.cost and p.outcome in BAD_OUTCOMES]
            stake = action.value if action.value is not None else (sum(costs) / len(costs) if costs else None)
            return RiskEstimate(
                risk=risk,
                evidence=round(evidence, 4),
                precedents=precedents,
                summary=self._summary(action, profile, precedents, novel, base),
                novel=novel,
                expected_cost=None if stake is None else risk * max(stake, 0.0),
                stake=action.value,
                recurrence=self._recurrence(action.tool, prior_strength),
                risk_lo=min(risk_lo, risk),
                reviewer_catch=self.reviewer.catch,
                reviewer_false_reject=self.reviewer.false_reject,
                outcome_error_rate=outcome_error_rate,
            )

    def _recurrence(self, tool: str, prior_strength: float) -> float:
        """How many calls what is learnt about this one would inform: the decided calls of its
        tool per unit of what has been learnt about the tool, or of its family (what is learnt
        about one ``get_*`` tool moves every ``get_*`` tool's prior) if more. Many kinds of
        call each come rarely; counted one tool at a time, none would ever seem worth a
        question, and a family blocked from the start would stay blocked for good."""
        own = self._decisions[tool] / (prior_strength + self._labelled[tool])
        family = _family(tool)
        decided = sum(n for t, n in self._decisions.items() if _family(t) == family)
        return max(own, decided / (prior_strength + self._labelled_family[family]))

    def _cite(self, cands: list[tuple[float, float, int, int, float]], action: Action) -> list[Precedent]:
        """The strongest precedents: the most similar shapes first and, within one shape, its
        newest cases (which weighed most); at most three per shape, so others get cited too."""
        out: list[Precedent] = []
        for sim, _, key, level, _ in cands:
            m = self._members[key]
            taken = 0
            for row in reversed([m] if isinstance(m, int) else m):
                case = self._row_case[row]
                if level and _nearer(case, action, level):
                    continue  # reached through a nearer partition already
                out.append(self._precedent(_Case._make(case), sim))
                taken += 1
                if len(out) == CITED:
                    return out
                if taken == 3:
                    break
        return out

    @staticmethod
    def _precedent(case: _Case, sim: float) -> Precedent:
        return Precedent(request_id=case.request_id, similarity=round(sim, 4), outcome=case.outcome,
                         severity=case.severity, cost=case.cost, tool=case.tool, decided_at=case.decided_at)  # fmt: skip

    @staticmethod
    def _summary(action: Action, profile: Profile, precedents: list[Precedent], novel: bool, base: float) -> str:
        how = _qualifier(profile)
        if not precedents:
            if novel:
                return f"no past {action.tool} call{how} resembles this one; prior risk {base:.0%}"
            return f"no similar past {action.tool} call has a known outcome yet; prior risk {base:.0%}"
        n = len(precedents)
        bad = [p for p in precedents if p.outcome in BAD_OUTCOMES or p.outcome == "rejected"
               or (p.outcome == "failed" and (p.severity or 0) >= 0.5)]  # fmt: skip
        calls = f"{action.tool} call{'s' if n != 1 else ''}"
        if not bad:
            return f"the {n} most similar {calls}{how} all went well" if n > 1 else f"the most similar {calls}{how} went well"
        cost = sum(p.cost or 0.0 for p in bad)
        costs = f" (cost {_money(cost)})" if cost else ""
        verbs = Counter("were rejected by a reviewer" if p.outcome == "rejected" else "ended badly" for p in bad)
        verb = verbs.most_common(1)[0][0]
        lead = "the most similar" if n == 1 else (f"all {n} most similar" if len(bad) == n else f"{len(bad)} of the {n} most similar")
        return f"{lead} {calls}{how} {verb}{costs}"


def _h_bytes(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _shape(profile: Profile) -> str:
    """A coarse class of a call's shape, shared across tools: whether it involves a
    counterparty seen in a harmful call, one never seen in a call that went well, and a value
    far from the usual."""
    bad = "bad" if profile.bad_ids else ("new" if profile.novel_ids else "known")
    unusual = "unusual" if max(abs(profile.value_z_tool), abs(profile.value_z_actor)) >= 2.0 else "usual"
    return f"{bad}/{unusual}"


def _family(tool: str) -> str:
    """A tool's family: the first word of its name (``get`` for ``get_balance``, ``send`` for
    ``sendMessage``), tools being named verb first."""
    for i, ch in enumerate(tool):
        if ch in "_-.:/ " or (ch.isupper() and i):
            return tool[:i].lower()
    return tool.lower()


def _true_bad(bad: float, n: float, error_rate: float) -> float:
    """Of ``n`` precedents with ``bad`` reported bad, how many truly were, when a share
    ``error_rate`` of reports is wrong either way (reported = true (1 - 2e) + n e)."""
    if error_rate <= 0.0:
        return bad
    return max(bad - error_rate * n, 0.0) / (1.0 - 2.0 * error_rate)


#: The grid a rate's posterior is computed on: 0, then geometric from 1e-5 to 1 (rates of bad
#: outcomes are mostly small, where resolution matters).
_EDGES = np.concatenate(([0.0], np.geomspace(1e-5, 1.0, 96)))
_GRID_LO, _GRID_HI = _EDGES[:-1], _EDGES[1:]
_GRID = np.where(_GRID_LO > 0, np.sqrt(np.maximum(_GRID_LO, 1e-300) * _GRID_HI), _GRID_HI / 2.0)
_LOG_HI = np.log(_GRID_HI)
_LOG_LO = np.log(np.maximum(_GRID_LO, 1e-300))
_LOG_1M = np.log1p(-np.minimum(_GRID, 1.0 - 1e-12))


@functools.lru_cache(maxsize=8192)  # a tool's counts change only with its labels: most calls ask again
def _posterior(bad: float, n: float, towards: float, strength: float, error_rate: float,
               lower: float = 0.1) -> tuple[float, float]:  # fmt: skip
    """The rate of truly bad outcomes given ``bad`` reported bad of ``n``, each report wrong at
    ``error_rate``, under a Beta prior of mean ``towards`` worth ``strength`` reports: its
    posterior mean and ``lower`` quantile.

    Subtracting the expected wrong reports and clipping at zero (the plain correction) leaves
    every kind of call whose wrong reports came in above their average looking risky; with
    many harmless kinds, some always do, and at a low asking threshold they are then all asked
    about. The posterior instead weighs how likely the rate is nil given what came in."""
    n = max(n, 0.0)
    bad = min(max(bad, 0.0), n)
    towards = min(max(towards, 1e-6), 1.0 - 1e-6)
    a, b = strength * towards, strength * (1.0 - towards)
    # Each cell's prior mass: the integral of x^(a-1) over it (exact), times (1-x)^(b-1) at its middle.
    mass = np.log(np.maximum(np.exp(a * _LOG_HI) - np.exp(a * _LOG_LO), 1e-300)) + (b - 1.0) * _LOG_1M
    e = min(max(error_rate, 0.0), 0.49)
    r = e + (1.0 - 2.0 * e) * _GRID  # the chance of a bad report at each rate
    ll = mass + bad * np.log(np.maximum(r, 1e-300)) + (n - bad) * np.log(np.maximum(1.0 - r, 1e-300))
    w = np.exp(ll - ll.max())
    w /= w.sum()
    # With no reports the mean is the prior's own, exactly (the grid only approximates it).
    mean = towards if n <= 0.0 else float(w @ _GRID)
    lo = float(_GRID[min(int(np.searchsorted(np.cumsum(w), lower)), len(_GRID) - 1)])
    return min(mean, 1.0), min(lo, mean)


def _odds(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return p / (1.0 - p)


def _from_odds(o: float) -> float:
    return o / (1.0 + o)


def _nearer(case: tuple[Any, ...], action: Action, level: int) -> bool:
    """Whether ``case`` (stored, see :class:`_Case`) belongs to a partition nearer to ``action``
    than ``level``."""
    return case[_TOOL] == action.tool or (level == 2 and case[_DOMAIN] == action.domain)


def _qualifier(profile: Profile) -> str:
    parts = []
    if profile.bad_ids:
        parts.append(f"involving {_a(' or '.join(_KIND.get(k, k) for k in profile.bad_ids))} seen in harmful calls")
    elif profile.novel_ids:
        parts.append(f"to a new {' and '.join(_KIND.get(k, k) for k in profile.novel_ids)}")
    if abs(profile.value_z_actor) >= 2.0 or abs(profile.value_z_tool) >= 2.0:
        parts.append("of unusual value")
    return (" " + " and ".join(parts)) if parts else ""


_KIND = {"iban": "IBAN", "email": "e-mail address", "email_domain": "e-mail domain", "host": "web host",
         "party": "counterparty", "phone": "phone number"}  # fmt: skip


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun
