"""Drift detection: a sequential test (Bernoulli CUSUM) on the bad-outcome rate of each tool, actor
and domain; its alert is a ``drift.detected`` event in the audit chain, sent by webhook."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from clearance import Engine
from clearance.memory.drift import DriftMonitor, DriftSettings

SEEDS = 100
LENGTH = 600
#: Outcomes after the change within which every injected drift must be caught.
BOUND = 250


def _alerts(stream: list[bool]) -> list[int]:
    monitor = DriftMonitor()
    return [i for i, bad in enumerate(stream) if monitor.observe("refund", "agent", "shop", bad)]


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2, 0.5, 0.7])
def test_no_alert_on_stationary_streams_over_many_seeds(rate: float) -> None:
    for seed in range(SEEDS):
        rng = random.Random(seed)
        assert _alerts([rng.random() < rate for _ in range(LENGTH)]) == [], f"false alarm, seed {seed}"


@pytest.mark.parametrize(("before", "after"), [(0.05, 0.30), (0.02, 0.25), (0.10, 0.40)])
def test_an_injected_drift_is_caught_within_a_bounded_number_of_outcomes(before: float, after: float) -> None:
    half = LENGTH // 2
    delays = []
    for seed in range(SEEDS):
        rng = random.Random(1000 + seed)
        stream = [rng.random() < before for _ in range(half)] + [rng.random() < after for _ in range(half)]
        alerts = _alerts(stream)
        assert alerts and alerts[0] >= half, f"seed {seed}: {alerts}"
        delays.append(alerts[0] - half)
    assert max(delays) <= BOUND and sorted(delays)[SEEDS // 2] <= 80


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_shift"):
        DriftSettings(min_shift=0)


T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


def _stream(engine: Engine, clock: list[datetime], statuses: list[str], tool: str = "refund") -> None:
    for status in statuses:
        d = engine.evaluate({"tool": tool, "arguments": {}, "actor": "agent-1", "domain": "shop"})
        engine.report_outcome(d.request_id, status, cost=10.0 if status == "harmful" else 0.0)
        clock[0] += timedelta(minutes=1)


def test_the_engine_records_an_alert_in_the_chain_once(tmp_path: Path) -> None:
    clock = [T0]
    rng = random.Random(3)
    calm = ["harmful" if rng.random() < 0.05 else "succeeded" for _ in range(80)]
    with Engine(tmp_path / "d.db", clock=lambda: clock[0], drift=DriftSettings(warmup=30)) as engine:
        _stream(engine, clock, calm)
        assert engine.audit_events(type="drift.detected") == []
        _stream(engine, clock, ["harmful"] * 20)
        alerts = engine.audit_events(type="drift.detected")
        assert {(a.payload["scope"], a.payload["value"]) for a in alerts} == {("tool", "refund"), ("actor", "agent-1"),
                                                                              ("domain", "shop")}  # fmt: skip
        assert all(a.payload["baseline_rate"] < 0.1 and a.payload["method"] == "bernoulli_cusum" for a in alerts)
        assert engine.verify_audit().ok
        since_alert = engine.drift._monitor.streams[("tool", "refund")].n  # outcomes after the alert, learnt afresh
        assert 0 < since_alert < 20
    # Other engines (restarted processes, one warmed at start as a server is) read the record and
    # neither raise the same alerts again nor miss the next ones.
    for warm in (False, True):
        with Engine(tmp_path / "d.db", clock=lambda: clock[0]) as engine:
            if warm:
                engine.warm_memory()
            _stream(engine, clock, ["succeeded"])
            assert len(engine.audit_events(type="drift.detected")) == 3
            streams = engine.drift._monitor.streams
            assert streams[("tool", "refund")].n == since_alert + 1 + warm
    with Engine(tmp_path / "off.db", clock=lambda: clock[0], drift=False) as engine:
        _stream(engine, clock, calm + ["harmful"] * 20)
        assert engine.audit_events(type="drift.detected") == []


def _risk_rules(half_life_days: float) -> str:
    return ("version: 1\nrisk: {half_life_days: %s, approval_above: 0.99, block_above: 1.0}\n"
            "rules:\n  - {id: wires, tool: wire, max_value: 1000000}\n" % half_life_days)  # fmt: skip


def test_late_outcomes_count_when_they_arrive(tmp_path: Path) -> None:
    """Outcomes reported days after their calls (chargebacks) move the next decision's risk at once."""
    from clearance import parse_rules

    clock = [T0]
    call = {"tool": "wire", "arguments": {"iban": "DE00 1234", "amount": 900}, "actor": "agent-1", "value": 900}
    with Engine(tmp_path / "late.db", clock=lambda: clock[0]) as engine:
        engine.apply_rules(parse_rules(_risk_rules(90)))
        earlier = []
        for _ in range(6):
            earlier.append(engine.evaluate(call).request_id)
            clock[0] += timedelta(minutes=1)
        before = engine.evaluate(call)
        clock[0] += timedelta(days=5)
        for rid in earlier:
            engine.report_outcome(rid, "harmful", cost=900, observed_at=T0 + timedelta(days=4))
        after = engine.evaluate(call)
        assert after.risk_score > before.risk_score + 0.3
