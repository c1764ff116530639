"""One upstream MCP server, reached with the ``mcp`` SDK's own client (stdio or Streamable HTTP)."""

from __future__ import annotations

import hashlib
import os
from contextlib import AsyncExitStack
from typing import Any

import mcp_types as types
from mcp import Client, StdioServerParameters

from clearance.adapters.mcp.config import UpstreamConfig
from clearance.model import canonical_json

__all__ = ["Upstream", "definition_digest"]

#: Pages of tools/list read at most from one upstream (a paginator that never ends cannot hang us).
_MAX_PAGES = 100


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
        self.client = await stack.enter_async_context(Client(target, cache=None))

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
