"""Backtest speed: 100,000 recorded decisions replayed under a candidate of 20 rules.

Target: under 60 s on the 2-core VM, goal 20 s.

The history is written straight into a fresh SQLite store (rows as the engine keeps them; one
transaction per 5,000): 100,000 decisions one to three seconds apart over 10 tools, 50 actors
and 4 domains, values log-normal, a third with an outcome (one in ten of those harmful, with a
cost). The candidate mixes every kind of limit (values, approvals, hourly and daily counts,
budgets, cooldowns per target, hours, actor lists, CEL conditions, a shadow rule), so the
replay's counters are exercised. Only ``Engine.backtest`` is timed: the history read, the
replay through the engine's evaluation, the join with outcomes.

    python benchmarks/backtest.py [--decisions 100000] [--seed 7]

Prints a summary and ends with one line of JSON: ``backtest_s_100k`` (or ``backtest_s`` for
another size), ``decisions_per_s``, ``changed``.

Measured on the 2-core VM: ``backtest_s_100k`` 4.0 s (25,000 decisions/s) when quiet; 11.2 s and
19.5 s while other helpers' work and a test run shared the cores. About a third is reading and decoding the rows (three JSON columns each),
the rest the rules' evaluation.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from clearance import Engine
from clearance.model import canonical_json
from clearance.policy import parse_rules

TOOLS = ["refund", "send_email", "wire", "delete_user", "update_crm", "create_ticket", "charge", "export", "deploy", "sms"]
DOMAINS = ["payments", "support", "ops", "growth"]

CANDIDATE = """
version: 1
rules:
  - {id: refund-cap, tool: refund, max_value: 2000}
  - {id: refund-ask, tool: refund, require_approval_above: 500}
  - {id: refund-rate, tool: refund, max_per_hour: 20}
  - {id: refund-budget, tool: refund, budget: 20000}
  - {id: email-rate, tool: send_email, max_per_hour: 30}
  - {id: email-day, tool: send_email, max_per_day: 300}
  - {id: email-external, tool: send_email, when: "!args.to.endsWith('@example.com')", effect: require_approval}
  - {id: wire-cap, tool: wire, max_value: 10000}
  - {id: wire-ask, tool: wire, require_approval_above: 1000, approvals_required: 2}
  - {id: wire-hours, tool: wire, allowed_hours: {start: 8, end: 18, tz: Europe/Berlin}}
  - {id: delete-deny, tool: delete_user, deny_actors: ["agent-4*"]}
  - {id: delete-cooldown, tool: delete_user, cooldown_seconds: 600}
  - {id: crm-day, tool: update_crm, max_per_day: 500}
  - {id: ticket-rate, tool: create_ticket, max_per_hour: 60}
  - {id: charge-cap, tool: charge, max_value: 5000, min_value: 1}
  - {id: charge-budget, tool: charge, budget: 50000}
  - {id: export-allow, tool: export, allow_actors: ["agent-1*", "agent-2*"]}
  - {id: deploy-ask, tool: deploy, domain: ops, effect: require_approval}
  - {id: sms-cooldown, tool: sms, cooldown_seconds: 120}
  - {id: big-anything, max_value: 50000, status: shadow}
"""


def make_history(engine: Engine, n: int, seed: int) -> None:
    rng = random.Random(seed)
    at = datetime(2026, 10, 1, tzinfo=timezone.utc)
    decisions, outcomes = [], []
    for i in range(n):
        at += timedelta(seconds=rng.uniform(1, 3))
        tool = rng.choice(TOOLS)
        actor = f"agent-{rng.randrange(50)}"
        value = round(rng.lognormvariate(5, 1.5), 2)
        target = f"t-{rng.randrange(200)}" if tool in ("delete_user", "sms") else None
        args = {"amount": value, "to": rng.choice(["a@example.com", "b@partner.io"])}
        result = "allowed" if rng.random() < 0.9 else "blocked"
        rid = f"req_{i:08d}"
        decision = {"request_id": rid, "result": result, "rules_result": result, "reason": "recorded",
                    "matched_rules": [{"rule_id": "old"}] if result == "blocked" else [], "shadow_rules": []}  # fmt: skip
        decisions.append({"request_id": rid, "trace_id": f"trc_{i}", "tool": tool, "actor": actor,
                          "domain": rng.choice(DOMAINS), "target": target, "value": value, "arguments": args,
                          "context": {}, "result": result, "policy_version": "1", "decided_at": at,
                          "decision": json.loads(canonical_json(decision))})  # fmt: skip
        if result == "allowed" and rng.random() < 1 / 3:
            harmful = rng.random() < 0.1
            outcomes.append({"event_id": f"out_{i}", "request_id": rid, "status": "harmful" if harmful else "succeeded",
                             "severity": 1.0 if harmful else 0.0, "cost": value if harmful else 0.0, "description": None,
                             "observed_at": at, "reported_by": None, "recorded_at": at})  # fmt: skip
        if len(decisions) == 5000 or i == n - 1:
            with engine.store.write() as tx:
                for row in decisions:
                    tx.insert_decision(row)
                for row in outcomes:
                    tx.insert_outcome(row)
            decisions, outcomes = [], []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    candidate = parse_rules(CANDIDATE)
    assert len(candidate.rules) == 20
    with tempfile.TemporaryDirectory(prefix="clearance-bench-") as tmp:
        with Engine(Path(tmp) / "history.db") as engine:
            t0 = time.perf_counter()
            make_history(engine, args.decisions, args.seed)
            built = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = engine.backtest(candidate)
            took = time.perf_counter() - t0
    assert report.decisions == args.decisions
    print(f"history of {args.decisions:,} decisions written in {built:.1f} s", file=sys.stderr)
    print(f"backtest: {took:.2f} s ({args.decisions / took:,.0f} decisions/s), {report.changed:,} changed, "
          f"transitions {report.transitions}", file=sys.stderr)  # fmt: skip
    key = "backtest_s_100k" if args.decisions == 100_000 else "backtest_s"
    print(json.dumps({key: round(took, 2), "decisions": args.decisions, "decisions_per_s": round(args.decisions / took),
                      "changed": report.changed, "rules": 20}))  # fmt: skip


if __name__ == "__main__":
    main()
