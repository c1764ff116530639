"""The stream runner shared by all tracks: a simulated clock, delayed (and possibly noisy)
outcomes, a reviewer for calls that require approval (whose answers are reported at once), and
per-call records for scoring.

Random draws that decide what happens to a call (reviewer, label noise, delay) are made when
the stream is built, so every guard faces the same world (common random numbers)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from clearance import Action

EPOCH = datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc)


class SimClock:
    def __init__(self, start: datetime = EPOCH) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Call:
    action: Action
    harmful: bool  # ground truth, never shown to the guard
    harm_cost: float  # cost if it runs and is harmful
    benign_value: float  # money at stake if a harmless call is refused
    delay: timedelta  # outcome revealed this long after it runs
    role: (
        str  # benign | attack | attack_read | violation | fraud ... (for scoring only)
    )
    u_review: float  # reviewer draw
    u_noise: float  # label-noise draw
    at: datetime | None = None  # when it is proposed (else the runner's interval)


@dataclass
class Episode:
    calls: list[Call]
    attacked: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    episode: int
    role: str
    harmful: bool
    harm_cost: float
    benign_value: float
    result: str
    risk: float | None
    ran: bool
    asked: bool
    loss: float


def run_stream(guard: Any, episodes: list[Episode], clock: SimClock, *, interval: timedelta, reviewer: dict[str, float],
               label_noise: float, costs: dict[str, float]) -> list[list[Record]]:  # fmt: skip
    """Drive ``guard`` over the episodes; return per-episode call records."""
    pending: list[tuple[datetime, int, str, bool, float]] = []
    seq = 0
    t = clock.now
    out: list[list[Record]] = []
    for ei, ep in enumerate(episodes):
        recs: list[Record] = []
        for call in ep.calls:
            t = call.at if call.at is not None else t + interval
            while pending and pending[0][0] <= t:
                at, _, rid, harmful, cost = heapq.heappop(pending)
                clock.now = at
                guard.report_outcome(rid, harmful, cost, at)
            clock.now = t
            v = guard.evaluate(call.action)
            asked = v.result == "requires_approval"
            if v.result == "allowed":
                ran = True
            elif asked:
                reject_p = (
                    reviewer["catch_rate"]
                    if call.harmful
                    else reviewer["false_reject_rate"]
                )
                ran = call.u_review >= reject_p
                # The person's answer is known at once, as in a deployment (resolve_approval).
                guard.report_outcome(v.request_id, not ran, 0.0, t, reviewed=True)
            else:
                ran = False
            loss = costs["approval"] if asked else 0.0
            if ran:
                loss += call.harm_cost if call.harmful else 0.0
                reported = call.harmful != (call.u_noise < label_noise)
                cost = (call.harm_cost or costs["harm_default"]) if reported else 0.0
                seq += 1
                heapq.heappush(
                    pending, (t + call.delay, seq, v.request_id, reported, cost)
                )
            elif not call.harmful:
                loss += (
                    costs["benign_blocked"]
                    + costs["benign_value_blocked"] * call.benign_value
                )
            recs.append(Record(ei, call.role, call.harmful, call.harm_cost, call.benign_value, v.result,
                               v.risk_score, ran, asked, loss))  # fmt: skip
        out.append(recs)
    return out
