"""Overhead of governance: a governed ``run`` against a plain ``openai`` loop, side by side.

Both make the same 4 model requests (3 turns with one function call each, then a text answer)
to the same local Responses server, run the same tool 3 times and send back the same outputs.
The governed run also decides each call durably (SQLite, synchronous=FULL), records each
execution and appends audit events. Runs alternate (plain, governed, plain, ...) so that
machine noise hits both alike; we compare medians.

Target: overhead_ratio (governed median / plain median) under 1.5.

    python benchmarks/adapter.py [--runs 40]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from clearance import Engine, GuardedOpenAI, parse_rules
from clearance.testing import ScriptedOpenAI, turn

RULES = """
version: 1
rules:
  - id: refunds
    tool: refund_payment
    max_value: 2000
    require_approval_above: 500
    max_per_hour: 100000
  - id: eur-only
    tool: refund_payment
    when: 'args.currency != "EUR"'
"""

CALLS = [{"order_id": f"ord_{i}", "amount": 10.0 + i, "currency": "EUR"} for i in range(3)]


def refund_payment(order_id: str, amount: float, currency: str) -> dict[str, Any]:
    """Refund an order.

    Args:
        order_id: The order.
        amount: How much.
        currency: ISO code.
    """
    return {"refund_id": f"re_{order_id}", "amount": amount, "currency": currency}


def script(server: ScriptedOpenAI) -> None:
    server.add(*(turn.function_call("refund_payment", args) for args in CALLS), turn.text("Done."))


def plain_run(client: openai.OpenAI, tools: list[dict[str, Any]]) -> str:
    """What a careful hand-written loop does: same transcript handling, no governance."""
    items: list[Any] = [{"role": "user", "content": "refund three orders"}]
    while True:
        response = client.responses.create(model="gpt-4.1", input=items, tools=tools, store=False,
                                           include=["reasoning.encrypted_content"])  # fmt: skip
        calls = [o for o in response.output if o.type == "function_call"]
        if not calls:
            return response.output_text
        for item in response.output:
            items.append(item.model_dump(mode="json", exclude_none=True))
        for call in calls:
            result = refund_payment(**json.loads(call.arguments))
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(result)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ScriptedOpenAI() as server:
        engine = Engine(Path(tmp) / "bench.db")
        engine.apply_rules(parse_rules(RULES))
        guard = GuardedOpenAI(openai_api_key="bench", base_url=server.base_url, actor="bench-agent",
                              domain="payments", engine=engine)  # fmt: skip
        guard.tool("refund_payment", refund_payment, value_from_args=lambda a: a["amount"])
        client = openai.OpenAI(api_key="bench", base_url=server.base_url, max_retries=0)
        tools = guard.list_tools()

        def governed() -> str:
            result = guard.run(messages=[{"role": "user", "content": "refund three orders"}], model="gpt-4.1")
            assert [e["status"] for e in result["execution"]["events"]] == ["executed"] * 3, result["execution"]
            return result["output_text"]

        plain_times, governed_times = [], []
        for i in range(args.runs + 3):  # the first 3 pairs warm up connections and caches
            for fn, bucket in ((lambda: plain_run(client, tools), plain_times), (governed, governed_times)):
                script(server)
                start = time.perf_counter()
                assert fn() == "Done."
                if i >= 3:
                    bucket.append(time.perf_counter() - start)
        server.assert_all_played()
        guard.close()
        engine.close()

    plain_ms = statistics.median(plain_times) * 1000
    governed_ms = statistics.median(governed_times) * 1000
    ratio = governed_ms / plain_ms
    print(f"runs per side:      {args.runs} (alternating, after 3 warm-up pairs)")
    print(f"plain openai loop:  median {plain_ms:.2f} ms per run (4 requests, 3 tool calls)")
    print(f"governed run:       median {governed_ms:.2f} ms per run")
    print(f"overhead:           {governed_ms - plain_ms:.2f} ms per run, ratio {ratio:.2f}x (target < 1.5x)")
    print(json.dumps({"overhead_ratio": round(ratio, 3), "plain_ms": round(plain_ms, 3),
                      "governed_ms": round(governed_ms, 3), "runs": args.runs}))  # fmt: skip


if __name__ == "__main__":
    main()
