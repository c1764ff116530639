"""clearance for OpenAI Agents SDK agents (``pip install "clearance[agents]"``).

``govern(agent, engine, actor=..., domain=...)`` puts an existing ``agents.Agent``'s function
tools under the engine, without rewriting them: blocked calls do not run and the model reads the
structured refusal as the tool's output; calls that need approval become the SDK's own
interruptions (``result.interruptions``, ``RunState``), answered by clearance approvals (the CLI,
the API, or ``Governance.approve`` / ``RunState.approve``); approved calls are claimed before they
run, so a resumed run runs each of them exactly once; every execution is recorded.
"""

try:
    import agents as _sdk  # noqa: F401
except ImportError as exc:  # said plainly rather than as a missing module deep in the import
    raise ImportError('clearance.adapters.agents needs the OpenAI Agents SDK: pip install "clearance[agents]"') from exc

from clearance.adapters.agents.gate import Approver, ApproverRequired, ValueFrom, trace_for
from clearance.adapters.agents.govern import Governance, govern

__all__ = ["Approver", "ApproverRequired", "Governance", "ValueFrom", "govern", "trace_for"]
