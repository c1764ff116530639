"""Overhead of governing an OpenAI Agents SDK agent: the same agent, plain and governed, side by side.

Both make the same 4 model requests (3 turns with one function call each, then a text answer)
to the same local Responses server through the SDK's own Runner, and run the same tool 3 times.
The governed agent (``clearance.adapters.agents.govern``) also decides each call durably (SQLite,
synchronous=FULL), records each execution and appends audit events. Runs alternate (plain,
governed, plain, ...) so that machine noise hits both alike; we compare medians.

Target: overhead_ratio (governed median / plain median) under 1.5.

    python benchmarks/agents_sdk.py [--runs 30]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
from openai import AsyncOpenAI

from clearance import Engine, parse_rules
from clearance.adapters.agents import govern
from clearance.testing import ScriptedOpenAI, turn

RULES = """
version: 1
rules:
  - id: refunds
    tool: refund_payment
    max_value: 2000
    require_approval_above: 500
    max_per_hour: 100000
"""

CALLS = [{"order_id": f"ord_{i}", "amount": 10.0 + i} for i in range(3)]
CONFIG = RunConfig(tracing_disabled=True)


def refund_payment(order_id: str, amount: float) -> dict[str, Any]:
    """Refund an order."""
    return {"refund_id": f"re_{order_id}", "amount": amount}


def make_agent(name: str, base_url: str) -> Agent[Any]:
    model = OpenAIResponsesModel("gpt-5", AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0))
    return Agent(name=name, instructions="Refund.", model=model, tools=[function_tool(refund_payment)])


async def bench(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, ScriptedOpenAI() as server:
        engine = Engine(Path(tmp) / "bench.db")
        engine.apply_rules(parse_rules(RULES))
        plain = make_agent("plain", server.base_url)
        governed = make_agent("governed", server.base_url)
        govern(governed, engine, actor="bench-agent", domain="payments", value={"refund_payment": "amount"})
        times: dict[str, list[float]] = {"plain": [], "governed": []}
        for i in range(runs + 3):  # the first 3 pairs warm up connections and caches
            for agent in (plain, governed):
                server.add(*(turn.function_call("refund_payment", args) for args in CALLS), turn.text("Done."))
                start = time.perf_counter()
                result = await Runner.run(agent, "refund three orders", run_config=CONFIG)
                assert result.final_output == "Done.", result.final_output
                if i >= 3:
                    times[agent.name].append(time.perf_counter() - start)
        server.assert_all_played()
        executed = [e for e in engine.audit_events(type="execution.recorded", limit=1000)]
        assert len(executed) == 3 * (runs + 3), len(executed)
        engine.close()
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    ms = asyncio.run(bench(args.runs))
    ratio = ms["governed"] / ms["plain"]
    per_call = (ms["governed"] - ms["plain"]) / len(CALLS)
    print(f"runs per side:      {args.runs} (alternating, after 3 warm-up pairs)")
    print(f"plain agent:        median {ms['plain']:.2f} ms per run (4 requests, 3 tool calls)")
    print(f"governed agent:     median {ms['governed']:.2f} ms per run")
    print(f"overhead:           {per_call:.2f} ms per call, ratio {ratio:.2f}x (target < 1.5x)")
    print(json.dumps({"overhead_ratio": round(ratio, 3), "overhead_ms_per_call": round(per_call, 3),
                      "plain_ms": round(ms["plain"], 3), "governed_ms": round(ms["governed"], 3), "runs": args.runs}))  # fmt: skip


if __name__ == "__main__":
    main()
