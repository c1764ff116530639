"""Overhead of the MCP gateway: the same tool calls sent to an upstream directly and through
``clearance mcp proxy``, alternating (direct, gateway, direct, ...) so machine noise hits both.

All talk to the same kind of upstream (tests/mcp_upstream.py, stdio, one process each) with the
``mcp`` SDK's client. Through the gateway each call is also decided durably (SQLite,
synchronous=FULL, a small rule set, memory on) before it is forwarded; its execution is
recorded durably after the result is sent. A third arm, a bare passthrough proxy on the same
SDK and the same stdio streams as the gateway (this file run with ``--bare-proxy``: an MCP
server whose ``tools/call`` forwards to an MCP client, no clearance; ``--sdk-stdio`` gives it
the SDK's own threaded stdio instead), measures what the extra MCP hop costs by itself
(``sdk_hop_ms_p50``); the rest of the overhead is clearance's. The overhead is the difference of the medians. On a machine shared with
other work the wall-clock figures follow the load; the CPU each side spends per call (from
/proc, on Linux) does not, and is printed beside them.

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


def _cpu_ms(marker: str) -> float | None:
    """CPU time (user + system) of this process's children whose command line holds ``marker``,
    and of their children: what a call costs the machine, whatever else shares it (Linux only)."""
    try:
        procs = {int(p.name): p for p in Path("/proc").iterdir() if p.name.isdigit()}
    except OSError:
        return None
    parents: dict[int, int] = {}
    for pid, path in procs.items():
        try:
            parents[pid] = int((path / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    roots = [pid for pid, ppid in parents.items() if ppid == os.getpid()
             and marker in (procs[pid] / "cmdline").read_bytes().decode(errors="replace")]  # fmt: skip
    family = set(roots)
    while more := {pid for pid, ppid in parents.items() if ppid in family} - family:
        family |= more
    ticks = 0
    for pid in family:
        try:
            fields = (procs[pid] / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def main(calls: int, warmup: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp, "rules.yaml")
        rules.write_text(RULES)
        direct = StdioServerParameters(command=sys.executable, args=[UPSTREAM, f"{tmp}/direct.jsonl"], env=env)
        bare = StdioServerParameters(command=sys.executable, env=env, args=[
            __file__, "--bare-proxy", "--", sys.executable, UPSTREAM, f"{tmp}/bare.jsonl"])  # fmt: skip
        gated = StdioServerParameters(command=sys.executable, env=env, args=[
            "-m", "clearance", "--db", f"{tmp}/bench.db", "mcp", "proxy", "--rules", str(rules), "--actor", "agent-1",
            "--", sys.executable, UPSTREAM, f"{tmp}/gated.jsonl"])  # fmt: skip
        async with Client(direct) as a, Client(gated) as b, Client(bare) as c:
            arms = [("direct", a), ("gateway", b), ("bare", c)]
            times: dict[str, list[float]] = {name: [] for name, _ in arms}
            markers = {"direct": "direct.jsonl", "gateway": "gated.jsonl", "bare": "bare.jsonl"}
            cpu: dict[str, float | None] = {}
            for i in range(warmup + calls):
                if i == warmup:
                    cpu = {k: _cpu_ms(m) for k, m in markers.items()}
                for name, client in arms[i % 3:] + arms[: i % 3]:  # each arm first, second and last in turn
                    start = time.perf_counter()
                    result = await client.call_tool("echo", {"text": f"call {i}"})
                    elapsed = (time.perf_counter() - start) * 1000
                    assert not result.is_error, result
                    if i >= warmup:
                        times[name].append(elapsed)
            after = {k: _cpu_ms(m) for k, m in markers.items()}
    d, g, bare_ms = times["direct"], times["gateway"], times["bare"]
    overheads = [y - x for x, y in zip(d, g)]
    per_call = {k: (after[k] - cpu[k]) / calls if after[k] is not None and cpu.get(k) is not None else None for k in after}  # type: ignore[operator]
    return {
        # CPU of the proxy (gateway or bare) and the upstream it runs, and of the upstream alone (Linux /proc):
        **{f"{k}_cpu_ms_per_call": round(v, 3) if v is not None else None for k, v in per_call.items()},
        "calls": calls,
        "load_average_1m": os.getloadavg()[0],
        "direct_ms_p50": round(statistics.median(d), 3),
        "gateway_ms_p50": round(statistics.median(g), 3),
        "gateway_ms_p99": round(_quantile(g, 0.99), 3),
        "mcp_overhead_ms_p50": round(statistics.median(g) - statistics.median(d), 3),
        "pairwise_overhead_ms_p90": round(_quantile(overheads, 0.9), 3),
        "bare_proxy_ms_p50": round(statistics.median(bare_ms), 3),
        # What the extra MCP hop (an SDK server and client in one process) costs without clearance.
        "sdk_hop_ms_p50": round(statistics.median(bare_ms) - statistics.median(d), 3),
    }


async def bare_proxy(command: list[str]) -> None:
    """Serve ``command``'s tools over stdio, forwarding each call as it is: the gateway's two SDK
    hops without clearance."""
    import mcp_types as types
    from mcp.server.lowlevel.server import Server
    from mcp.server.stdio import stdio_server

    async with Client(StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ)), cache=None) as up:

        async def list_tools(ctx: object, params: object) -> types.ListToolsResult:
            return await up.list_tools()

        async def call_tool(ctx: object, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await up.call_tool(params.name, params.arguments or {})

        server = Server("bare-proxy", on_list_tools=list_tools, on_call_tool=call_tool)
        if os.environ.get("BARE_PROXY_SDK_STDIO"):
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
            return
        # The gateway's own stdin and stdout, from this checkout: the same bare proxy whichever
        # clearance the gateway arm runs (an A/B run against an older one sets PYTHONPATH).
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
        from clearance.adapters.mcp.stdio import event_loop_stdio

        async with event_loop_stdio() as streams, stdio_server(*(streams or ())) as (read, write):
            await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--bare-proxy":
        anyio.run(bare_proxy, sys.argv[3:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--sdk-stdio", action="store_true", help="The bare proxy on the SDK's own (threaded) stdio.")
    args = parser.parse_args()
    if args.sdk_stdio:
        os.environ["BARE_PROXY_SDK_STDIO"] = "1"
    figures = anyio.run(main, args.calls, args.warmup)
    print(f"direct p50 {figures['direct_ms_p50']} ms, through the gateway p50 {figures['gateway_ms_p50']} ms "
          f"(p99 {figures['gateway_ms_p99']} ms), through a bare SDK proxy p50 {figures['bare_proxy_ms_p50']} ms")  # fmt: skip
    print(json.dumps(figures))
