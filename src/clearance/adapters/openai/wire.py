"""Which OpenAI API a guard speaks: the only place the two wires differ.

The loop builds Responses-shaped requests and reads Responses-shaped responses. A wire sends a
request with the SDK and hands back what came in, in the loop's shape; for a stream it gives
the assembler that turns the SDK's events into the adapter's events.
"""

from __future__ import annotations

from typing import Any, Literal

from clearance.adapters.openai.chat import ChatStreamAssembler, from_chat_completion, to_chat_request, tool_spec
from clearance.adapters.openai.streaming import StreamAssembler, _Assembler

__all__ = ["API", "ChatWire", "ResponsesWire", "Wire", "as_dict", "wire_for"]

API = Literal["responses", "chat"]


def as_dict(response: Any) -> dict[str, Any]:
    if isinstance(response, dict):
        return response
    return response.model_dump(mode="json", warnings=False)  # type: ignore[no-any-return]


class Wire:
    api: str = ""

    def send(self, client: Any, request: dict[str, Any]) -> Any:
        """The SDK call for ``request`` (a coroutine with an async client; a stream if ``stream``)."""
        raise NotImplementedError

    def response(self, raw: Any) -> dict[str, Any]:
        raise NotImplementedError

    def assembler(self) -> _Assembler:
        raise NotImplementedError

    def tool(self, responses_tool: dict[str, Any]) -> dict[str, Any]:
        return responses_tool


class ResponsesWire(Wire):
    api = "responses"

    def send(self, client: Any, request: dict[str, Any]) -> Any:
        return client.responses.create(**request)

    def response(self, raw: Any) -> dict[str, Any]:
        return as_dict(raw)

    def assembler(self) -> _Assembler:
        return StreamAssembler()


class ChatWire(Wire):
    api = "chat"

    def send(self, client: Any, request: dict[str, Any]) -> Any:
        return client.chat.completions.create(**to_chat_request(request))

    def response(self, raw: Any) -> dict[str, Any]:
        return from_chat_completion(as_dict(raw))

    def assembler(self) -> _Assembler:
        return ChatStreamAssembler()

    def tool(self, responses_tool: dict[str, Any]) -> dict[str, Any]:
        return tool_spec(responses_tool)


def wire_for(api: str) -> Wire:
    if api == "responses":
        return ResponsesWire()
    if api == "chat":
        return ChatWire()
    raise ValueError(f"api must be 'responses' or 'chat', not {api!r}")
