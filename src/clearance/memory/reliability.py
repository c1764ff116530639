"""What memory learns about the evidence itself: how reliable reviewers are, and how often
outcome reports are wrong. Neither is a setting: both are estimated online from what the engine
sees, starting from stated priors, so nothing fitted to one deployment has to be written down.

Reviewers. A call sent to a person is rejected, or approved and then (later) reported good or
bad. With ``p`` the call's risk when it was asked about, a reviewer who catches a share ``c`` of
bad calls and refuses a share ``f`` of good ones rejects with probability ``p c + (1 - p) f``; an
approved call that ends badly was a miss. Each answer updates ``c`` and ``f`` by one step of
expectation-maximisation: a rejection counts as a catch with the posterior weight
``p c / (p c + (1 - p) f)`` and as a wrong refusal with the rest.

Reports. Identical calls (same tool, same argument tokens) often share their fate; the share of
reports that disagree with the rest of their group, over the groups that are not plainly mixed,
estimates how often reports are wrong.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CATCH_PRIOR", "FALSE_REJECT_PRIOR", "NOISE_PRIOR", "NoiseModel", "ReviewerModel", "cheapest"]

#: Beta priors as (successes, failures): reviewers catch 4 bad calls in 5 and refuse 1 good
#: call in 10; one outcome report in 100 is wrong. Deliberately vague: a few dozen answers
#: or reports outweigh them.
CATCH_PRIOR = (4.0, 1.0)
FALSE_REJECT_PRIOR = (1.0, 9.0)
NOISE_PRIOR = (0.5, 49.5)
#: Answers' worth of weight the reviewer's false-rejection rate carries in a kind's rejection rate (see asked_bad).
KIND_STRENGTH = 10.0
#: Reports believed wrong at most this often (beyond it, the groups are mixed, not noisy).
NOISE_CAP = 0.25


class ReviewerModel:
    """Online estimates of a reviewer's catch rate and false-rejection rate."""

    __slots__ = ("caught", "missed", "refused", "passed", "answers", "rejections", "by_kind")

    def __init__(self) -> None:
        self.caught, self.missed = CATCH_PRIOR
        self.refused, self.passed = FALSE_REJECT_PRIOR
        self.answers, self.rejections = 10.0, 3.0  # a prior: 3 rejections in 10 answers
        #: kind of call (the engine passes the tool) -> [answers, rejections]
        self.by_kind: dict[str, list[float]] = {}

    def asked_bad(self, kind: str | None = None) -> float:
        """The share of bad calls among those put to a person (of one kind, if given): what a
        rejection rate ``r`` means for a reviewer of these rates (``r = pi c + (1 - pi) f``).
        A kind's rate is shrunk, with KIND_STRENGTH answers, towards the reviewer's rate of
        refusing good calls: a kind is taken to be bad only as far as its own calls are
        rejected more often than good calls are, however bad other kinds put to a person are
        (read with every kind's rate, wrongly refused reads counted as harm)."""
        c, f = self.catch, self.false_reject
        if kind is None:
            r = self.rejections / self.answers
        else:
            got = self.by_kind.get(kind, (0.0, 0.0))
            r = (got[1] + KIND_STRENGTH * f) / (got[0] + KIND_STRENGTH)
        return min(max((r - f) / (c - f), 0.01), 0.99) if c > f else 0.5

    def answered(self, rejected: bool, kind: str | None = None) -> None:
        self.answers += 1.0
        self.rejections += float(rejected)
        if kind is not None:
            got = self.by_kind.setdefault(kind, [0.0, 0.0])
            got[0] += 1.0
            got[1] += float(rejected)

    @property
    def catch(self) -> float:
        return self.caught / (self.caught + self.missed)

    @property
    def false_reject(self) -> float:
        return self.refused / (self.refused + self.passed)

    def bad_if_rejected(self, p: float | None = None) -> float:
        """How likely a call of risk ``p`` (default: as bad as the calls put to a person
        usually are) that a person rejected was bad."""
        p = min(max(self.asked_bad() if p is None else p, 1e-4), 1.0 - 1e-4)
        c, f = self.catch, self.false_reject
        return p * c / (p * c + (1.0 - p) * f)

    def bad_if_approved(self, p: float | None = None) -> float:
        """How likely a call of risk ``p`` (default as above) that a person approved is bad."""
        p = min(max(self.asked_bad() if p is None else p, 1e-4), 1.0 - 1e-4)
        c, f = self.catch, self.false_reject
        return p * (1.0 - c) / (p * (1.0 - c) + (1.0 - p) * (1.0 - f))

    def rejected(self, p: float) -> None:
        """A person rejected a call memory gave risk ``p``."""
        p = min(max(p, 1e-4), 1.0 - 1e-4)
        c, f = self.catch, self.false_reject
        r = p * c / (p * c + (1.0 - p) * f)
        self.caught += r
        self.refused += 1.0 - r

    def approved_then(self, bad: float, p: float = 0.5, error_rate: float = 0.0) -> None:
        """A call of risk ``p`` that a person approved ran and was reported ``bad`` (0..1),
        reports being wrong at ``error_rate``: it was a miss as far as the report, read through
        that error rate, says."""
        q = self.bad_if_approved(p)
        e = min(max(error_rate, 0.0), 0.49)
        if_bad = q * (1.0 - e) / (q * (1.0 - e) + (1.0 - q) * e) if e else 1.0
        if_good = q * e / (q * e + (1.0 - q) * (1.0 - e)) if e else 0.0
        miss = bad * if_bad + (1.0 - bad) * if_good
        self.missed += miss
        self.passed += 1.0 - miss


class NoiseModel:
    """How often outcome reports are wrong, from groups of identical calls.

    Identical calls (same tool, same argument tokens) mostly share their fate, so each group is
    taken to be truly all good or all bad, its reports flipped at the rate sought; expectation-
    maximisation over every group of at least ``MIN_GROUP`` reports then weighs each group's
    minority reports by how likely the group is good or bad, leaving out (and refitting without)
    groups far too mixed for that rate to explain (those are truly mixed). Groups of two count: a memory that
    learns stops running the twins of a call reported bad, so the groups that grow large are
    mostly the ones whose reports all came back good, and counting only those would under-
    estimate the rate (and leave the risk of a harmless kind of call at the rate of wrong reports).
    """

    MIN_GROUP = 2
    REFRESH = 32  # reports between recomputations
    ROUNDS = 25  # of expectation-maximisation per recomputation

    __slots__ = ("groups", "big", "limit", "_fresh", "_rate")

    def __init__(self, limit: int = 200_000) -> None:
        self.groups: dict[int, list[float]] = {}  # group key -> [reports, bad reports]
        self.big: dict[int, list[float]] = {}  # the groups of at least MIN_GROUP reports
        self.limit = limit
        self._fresh = 0  # reports since the rate was computed
        self._rate: float | None = None

    def add(self, key: int, bad: float) -> None:
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= self.limit:  # forget groups of one report: they say nothing
                for k in [k for k, v in self.groups.items() if v[0] < 2][: self.limit // 2]:
                    del self.groups[k]
                if len(self.groups) >= self.limit:  # all repeated: keep the larger half
                    for k, _ in sorted(self.groups.items(), key=lambda kv: kv[1][0])[: self.limit // 2]:
                        del self.groups[k]
                        self.big.pop(k, None)
            self.groups[key] = [1.0, bad]
        else:
            g[0] += 1.0
            g[1] += bad
            if g[0] == self.MIN_GROUP:
                self.big[key] = g
        # Recomputed as reports arrive (not when asked), so a memory rebuilt from the log,
        # which is never asked on the way, holds the same estimate as the live one; the more
        # groups, the rarer, so the work per report stays about constant.
        self._fresh += 1
        if self._fresh >= max(self.REFRESH, len(self.big) // 4):
            self._rate, self._fresh = self._compute(), 0

    @property
    def rate(self) -> float:
        if self._rate is None:
            a, b = NOISE_PRIOR
            return a / (a + b)
        return self._rate

    def _compute(self) -> float:
        a, b = NOISE_PRIOR
        if not self.big:
            return a / (a + b)
        counts = np.asarray(list(self.big.values()), dtype=np.float64)
        rate = self._fit(counts)
        for _ in range(4):  # groups far more mixed than the rate explains are mixed, not noisy
            minority = np.minimum(counts[:, 1], counts[:, 0] - counts[:, 1])
            n = counts[:, 0]
            keep = counts[minority <= n * rate + 3.0 * np.sqrt(n * rate * (1.0 - rate)) + 1.0]
            new = self._fit(keep) if len(keep) else a / (a + b)
            if abs(new - rate) < 1e-6:
                rate = new
                break
            rate = new
        return min(rate, NOISE_CAP)

    def _fit(self, counts: np.ndarray) -> float:
        """The rate of wrong reports that best explains these groups, each truly all good or all
        bad (expectation-maximisation from the prior)."""
        a, b = NOISE_PRIOR
        n, bad = counts[:, 0], counts[:, 1]
        good = n - bad
        rate, share_bad = a / (a + b), 0.1  # starting points: the prior, and a tenth of the groups bad
        for _ in range(self.ROUNDS):
            le, lg = math.log(rate), math.log1p(-rate)
            # log-likelihood of each group's reports if it is truly good (its bad reports wrong) or bad
            if_good = math.log1p(-share_bad) + bad * le + good * lg
            if_bad = math.log(share_bad) + good * le + bad * lg
            w_bad = 1.0 / (1.0 + np.exp(np.clip(if_good - if_bad, -50.0, 50.0)))
            wrong = float((w_bad * good + (1.0 - w_bad) * bad).sum())
            new = min((wrong + a) / (float(n.sum()) + a + b), NOISE_CAP)
            share_bad = min(max((float(w_bad.sum()) + 1.0) / (len(n) + 2.0), 1e-4), 1.0 - 1e-4)
            if abs(new - rate) < 1e-7:
                return new
            rate = new
        return rate


def cheapest(p: float, harm: float, refused: float, review: float, catch: float,
             false_reject: float) -> tuple[str, dict[str, float]]:  # fmt: skip
    """The verdict of least expected cost for a call that ends badly with probability ``p``:
    ``allowed`` costs ``p harm``; ``blocked`` costs ``(1 - p) refused``; ``requires_approval``
    costs the review, plus the harm of the bad calls the person misses and the refusal of the
    good ones they reject. Ties go to the less strict verdict."""
    costs = {
        "allowed": p * harm,
        "requires_approval": review + p * (1.0 - catch) * harm + (1.0 - p) * false_reject * refused,
        "blocked": (1.0 - p) * refused,
    }
    best = "allowed"
    for verdict in ("requires_approval", "blocked"):
        if costs[verdict] < costs[best] - 1e-12:
            best = verdict
    return best, costs
