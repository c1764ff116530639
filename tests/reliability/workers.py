"""What the forked processes of the reliability suite run (see ``forks.py``).

Each worker writes one line per step to its standard output, with a single ``write`` each, as
soon as the step has returned: what a line says was acknowledged to the caller. A SIGKILL can
land anywhere between (or inside) the steps; the file keeps every line written before it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

#: The policy the kill and race tests run under.
RULES = """
version: 1
rules:
  - id: refunds
    tool: refund
    max_value: 100000
    require_approval_above: 500
  - id: pings
    tool: ping
    max_per_hour: 10
"""


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def action(i: int, tag: str) -> dict[str, Any]:
    """Every fifth call needs approval; the others are allowed."""
    value = 900.0 if i % 5 == 4 else float(10 + i % 50)
    return {"tool": "refund", "actor": f"agent-{tag}", "domain": "shop", "value": value,
            "arguments": {"order": f"{tag}-{i}", "amount": value}}  # fmt: skip


def decide_loop(db: str, tag: str, limit: int = 100_000) -> None:
    """Decide, claim and record executions until killed: ``ack RID RESULT`` once a decision is
    returned, ``claimed RID`` once the claim is granted, ``executed RID`` once recorded."""
    from clearance import Engine

    engine = Engine(db)
    say("open")
    for i in range(limit):
        decision = engine.evaluate(action(i, tag))
        say(f"ack {decision.request_id} {decision.result.value}")
        if decision.allowed:
            engine.claim_execution(decision.request_id, claimant=f"worker-{tag}")
            say(f"claimed {decision.request_id}")
            engine.record_execution(decision.request_id, "executed", {"order": f"{tag}-{i}"})
            say(f"executed {decision.request_id}")


def race(db: str, start_at: float, request_id: str, approval_id: str, pings: int, pinger: str, who: str) -> None:
    """At ``start_at``: claim ``request_id``, resolve ``approval_id``, decide ``pings`` rate-limited
    calls; print what was granted as one JSON line."""
    from clearance import Engine
    from clearance.errors import ConflictError

    engine = Engine(db)
    time.sleep(max(0.0, start_at - time.time()))
    claimed = resolved = False
    try:
        engine.claim_execution(request_id, claimant=who)
        claimed = True
    except ConflictError:
        pass
    try:
        engine.resolve_approval(approval_id, "approved", approver=who)
        resolved = True
    except ConflictError:
        pass
    allowed = sum(engine.evaluate({"tool": "ping", "actor": pinger, "arguments": {"n": n}}).allowed for n in range(pings))
    say(json.dumps({"claimed": claimed, "resolved": resolved, "allowed": allowed}))
    engine.close()


def serve(db: str, port: int) -> None:
    """``clearance serve`` on ``db``, as a shell would start it."""
    import clearance.cli

    os.environ["CLEARANCE_DB"] = db
    sys.argv = ["clearance", "serve", "--port", str(port), "--log-level", "warning"]
    clearance.cli.main()
