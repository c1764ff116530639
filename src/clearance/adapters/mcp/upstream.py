"""One upstream MCP server, reached with the ``mcp`` SDK's own client (stdio or Streamable HTTP)."""

from __future__ import annotations

import hashlib
import os
from contextlib import AsyncExitStack
from typing import Any

import mcp_types as types
from mcp import Client, StdioServerParameters

from clearance.adapters.mcp.config import UpstreamConfig
from clearance.errors import ClearanceError
from clearance.model import canonical_json

__all__ = ["Upstream", "UpstreamError", "definition_digest"]

#: Pages of tools/list read at most from one upstream (a paginator that never ends cannot hang us).
_MAX_PAGES = 100


class UpstreamError(ClearanceError):
    """An upstream MCP server could not be started or reached."""


def _leaf(exc: BaseException) -> str:
    """The first real error inside task groups' exception groups, as one line."""
    while getattr(exc, "exceptions", None):  # an ExceptionGroup (a backport's on Python 3.10)
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


def definition_digest(tool: types.Tool) -> str:
    """The digest a tool is pinned by: its name, description and input schema, as the model sees them."""
    shown = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
    return hashlib.sha256(canonical_json(shown).encode()).hexdigest()


class Upstream:
    """A connected upstream: list its tools, call one."""

    def __init__(self, name: str | None, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        self.client: Client | None = None

    @property
    def source(self) -> str:
        """What its tools are pinned under: its name, else the name the server gives itself."""
        if self.name:
            return self.name
        info = self.client.server_info if self.client is not None else None
        return info.name if info is not None and info.name else "upstream"

    async def connect(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        target: Any
        if cfg.command is not None:
            # The whole environment, as a launched server expects (the SDK passes only a safe few
            # variables by default): the gateway stands where the server would have been.
            target = StdioServerParameters(command=cfg.command, args=cfg.args, env={**os.environ, **cfg.env}, cwd=cfg.cwd)
        elif cfg.headers:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = await stack.enter_async_context(httpx2.AsyncClient(headers=cfg.headers, timeout=httpx2.Timeout(30.0, read=300.0)))
            target = streamable_http_client(cfg.url, http_client=http)  # type: ignore[arg-type]
        else:
            target = cfg.url
        try:
            self.client = await stack.enter_async_context(Client(target, cache=None))
        except Exception as exc:  # noqa: BLE001 - a command not found, a refused connection: one line, no traceback
            where = cfg.url or " ".join([cfg.command or "", *cfg.args])
            named = f" {self.name}" if self.name else ""
            raise UpstreamError(f"cannot reach upstream{named} ({where}): {_leaf(exc)}") from None

    async def list_tools(self) -> list[types.Tool]:
        assert self.client is not None
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self.client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        assert self.client is not None
        return await self.client.call_tool(name, arguments)
