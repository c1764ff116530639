"""Governed tool calls for OpenAI: the Responses API, sync and async."""

from clearance.adapters.openai.guard import AsyncGuardedOpenAI, GuardedOpenAI
from clearance.adapters.openai.resilience import CircuitOpenError
from clearance.adapters.openai.tools import FunctionTool, ToolArgumentsError, ToolDefinitionError, function_tool

__all__ = [
    "AsyncGuardedOpenAI",
    "CircuitOpenError",
    "FunctionTool",
    "GuardedOpenAI",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "function_tool",
]
