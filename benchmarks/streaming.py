"""Time to first token: governed ``run_stream`` against the plain SDK stream, side by side.

Both stream the same scripted text turn from the same local Responses server: the plain side
with ``client.responses.create(stream=True)`` until the first ``response.output_text.delta``,
the governed side with ``guard.run_stream(...)`` until the first ``llm_delta``. Each side then
drains its stream, so connections are reused alike. Runs alternate; we compare medians.

Target: ttft_ratio (governed median / plain median) under 1.2.

    python benchmarks/streaming.py [--runs 60]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import openai

from clearance import Engine, GuardedOpenAI
from clearance.testing import ScriptedOpenAI, turn

TEXT = "Refunds are processed within five business days of approval, to the original payment method."


def lookup_order(order_id: str) -> dict[str, str]:
    """Look an order up.

    Args:
        order_id: The order.
    """
    return {"order_id": order_id, "status": "shipped"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ScriptedOpenAI() as server:
        engine = Engine(Path(tmp) / "bench.db")
        guard = GuardedOpenAI(openai_api_key="bench", base_url=server.base_url, actor="bench", engine=engine)
        guard.tool(lookup_order)
        client = openai.OpenAI(api_key="bench", base_url=server.base_url, max_retries=0)
        tools = guard.list_tools()
        messages = [{"role": "user", "content": "When will my refund arrive?"}]

        def plain() -> float:
            start = time.perf_counter()
            first = None
            stream = client.responses.create(model="gpt-4.1", input=messages, tools=tools, store=False,
                                             include=["reasoning.encrypted_content"], stream=True)  # fmt: skip
            for event in stream:
                if first is None and event.type == "response.output_text.delta":
                    first = time.perf_counter() - start
            assert first is not None
            return first

        def governed() -> float:
            start = time.perf_counter()
            first = None
            for event in guard.run_stream(messages=messages, model="gpt-4.1"):
                if first is None and event["type"] == "llm_delta":
                    first = time.perf_counter() - start
            assert first is not None and event["type"] == "final_response"
            return first

        plain_t, governed_t = [], []
        for i in range(args.runs + 3):  # 3 warm-up pairs
            for fn, bucket in ((plain, plain_t), (governed, governed_t)):
                server.add(turn.text(TEXT))
                value = fn()
                if i >= 3:
                    bucket.append(value)
        server.assert_all_played()
        guard.close()
        engine.close()

    plain_ms = statistics.median(plain_t) * 1000
    governed_ms = statistics.median(governed_t) * 1000
    ratio = governed_ms / plain_ms
    print(f"runs per side:         {args.runs} (alternating, after 3 warm-up pairs)")
    print(f"plain SDK stream TTFT: median {plain_ms:.2f} ms")
    print(f"run_stream TTFT:       median {governed_ms:.2f} ms")
    print(f"ratio:                 {ratio:.2f}x (target < 1.2x)")
    print(json.dumps({"ttft_ratio": round(ratio, 3), "plain_ttft_ms": round(plain_ms, 3),
                      "governed_ttft_ms": round(governed_ms, 3), "runs": args.runs}))  # fmt: skip


if __name__ == "__main__":
    main()
