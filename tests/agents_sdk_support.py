"""An OpenAI Agents SDK support agent for tests/test_agents_sdk*.py, and a second process that resumes it.

The agent's tools write a line to ``runs`` (a file) each time they really run, so a test can count
runs across processes. Its model is the SDK's own Responses model on a client pointed at
:class:`clearance.testing.ScriptedOpenAI` (``base_url``): nothing reaches OpenAI, and tracing is off.

``python tests/agents_sdk_support.py DB BASE_URL RUNS STATE_FILE`` resumes the serialized
``RunState`` in ``STATE_FILE`` with a freshly built, freshly governed agent on the SQLite store
``DB`` (after carrying clearance's answers into the state) and prints ``{"final_output", "interruptions", "runs"}`` as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, RunState, function_tool
from openai import AsyncOpenAI

from clearance.adapters.agents import Governance, govern

ACTOR, DOMAIN = "agent-7", "shop"  # the actor and domain of tests/server_support.RULES
#: No traces leave the process (the SDK would otherwise try to export them to OpenAI).
CONFIG = RunConfig(tracing_disabled=True)


def build_agent(base_url: str, runs: Path) -> Agent[Any]:
    """A support agent written as its authors would write it, without any clearance in it."""

    def ran(line: str) -> None:
        with runs.open("a") as f:
            f.write(line + "\n")

    @function_tool
    def lookup_order(order_id: str) -> dict[str, Any]:
        """Look an order up."""
        ran(f"lookup_order {order_id}")
        return {"order_id": order_id, "total": 700.0, "customer_id": "cus_1"}

    @function_tool
    def refund_payment(order_id: str, amount: float) -> str:
        """Refund an order, in full or in part."""
        ran(f"refund_payment {order_id} {amount}")
        return f"refunded {amount:.2f} on {order_id}"

    @function_tool
    def delete_account(customer_id: str) -> str:
        """Delete a customer's account."""
        ran(f"delete_account {customer_id}")
        return "deleted"

    @function_tool
    def wire_transfer(to: str, amount: float) -> str:
        """Send money by wire."""
        ran(f"wire_transfer {to} {amount}")
        return "sent"

    @function_tool
    def flaky_export(customer_id: str) -> str:
        """Export a customer's data."""
        ran(f"flaky_export {customer_id}")
        raise RuntimeError("the export service is down")

    client = AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=10)
    return Agent(name="support", instructions="Help the customer.", model=OpenAIResponsesModel("gpt-5", client),
                 tools=[lookup_order, refund_payment, delete_account, wire_transfer, flaky_export])  # fmt: skip


def governed(agent: Agent[Any], engine: Any, **kwargs: Any) -> Governance:
    kwargs.setdefault("value", {"refund_payment": "amount", "wire_transfer": "amount"})
    return govern(agent, engine, actor=ACTOR, domain=DOMAIN, target={"refund_payment": "order_id"}, **kwargs)


def ran(runs: Path) -> list[str]:
    return runs.read_text().splitlines() if runs.exists() else []


async def _resume(db: str, base_url: str, runs: Path, state_file: Path) -> dict[str, Any]:
    from clearance import Engine

    with Engine(db) as engine:
        agent = build_agent(base_url, runs)
        governance = governed(agent, engine)
        state = await RunState.from_string(agent, state_file.read_text())
        await governance.apply_approvals(state)  # the answers given with `clearance approvals`
        result = await Runner.run(agent, state, run_config=CONFIG)
        return {"final_output": result.final_output, "interruptions": len(result.interruptions), "runs": ran(runs)}


if __name__ == "__main__":
    db, base_url, runs_file, state_path = sys.argv[1:5]
    print(json.dumps(asyncio.run(_resume(db, base_url, Path(runs_file), Path(state_path)))))
