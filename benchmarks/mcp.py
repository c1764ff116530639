"""Overhead of the MCP gateway: the same tool calls sent to an upstream directly and through
``clearance mcp proxy``, alternating (direct, gateway, direct, ...) so machine noise hits both.

Both talk to the same kind of upstream (tests/mcp_upstream.py, stdio, one process each) with the
``mcp`` SDK's client. Through the gateway each call is also decided durably (SQLite,
synchronous=FULL, a small rule set, memory on), forwarded, and its execution recorded durably
before the result comes back. The overhead is the difference of the medians.

Target: mcp_overhead_ms_p50 under 2 ms.

    python benchmarks/mcp.py [--calls 300]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file's name would hide the SDK's.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import anyio  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

UPSTREAM = str(Path(__file__).resolve().parent.parent / "tests" / "mcp_upstream.py")

RULES = """
rules:
  - {id: no-deletes, tool: delete_repo, deny_actors: ["agent-*"]}
  - {id: refunds, tool: refund, max_value: 1000, require_approval_above: 100}
  - {id: echo-rate, tool: echo, max_per_hour: 1000000}
  - {id: echo-text, tool: echo, when: 'args.text == "forbidden"'}
"""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def main(calls: int, warmup: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp, "rules.yaml")
        rules.write_text(RULES)
        direct = StdioServerParameters(command=sys.executable, args=[UPSTREAM, f"{tmp}/direct.jsonl"], env=env)
        gated = StdioServerParameters(command=sys.executable, env=env, args=[
            "-m", "clearance", "--db", f"{tmp}/bench.db", "mcp", "proxy", "--rules", str(rules), "--actor", "agent-1",
            "--", sys.executable, UPSTREAM, f"{tmp}/gated.jsonl"])  # fmt: skip
        async with Client(direct) as a, Client(gated) as b:
            times: dict[str, list[float]] = {"direct": [], "gateway": []}
            for i in range(warmup + calls):
                for name, client in (("direct", a), ("gateway", b)) if i % 2 == 0 else (("gateway", b), ("direct", a)):
                    start = time.perf_counter()
                    result = await client.call_tool("echo", {"text": f"call {i}"})
                    elapsed = (time.perf_counter() - start) * 1000
                    assert not result.is_error, result
                    if i >= warmup:
                        times[name].append(elapsed)
    d, g = times["direct"], times["gateway"]
    overheads = [y - x for x, y in zip(d, g)]
    return {
        "calls": calls,
        "direct_ms_p50": round(statistics.median(d), 3),
        "gateway_ms_p50": round(statistics.median(g), 3),
        "gateway_ms_p99": round(_quantile(g, 0.99), 3),
        "mcp_overhead_ms_p50": round(statistics.median(g) - statistics.median(d), 3),
        "pairwise_overhead_ms_p90": round(_quantile(overheads, 0.9), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    figures = anyio.run(main, args.calls, args.warmup)
    print(f"direct p50 {figures['direct_ms_p50']} ms, through the gateway p50 {figures['gateway_ms_p50']} ms "
          f"(p99 {figures['gateway_ms_p99']} ms)")  # fmt: skip
    print(json.dumps(figures))
