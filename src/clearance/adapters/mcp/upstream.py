"""One upstream MCP server, reached with the ``mcp`` SDK's own client (stdio or Streamable HTTP)."""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp import Client, StdioServerParameters

from clearance.adapters.mcp.config import UpstreamConfig
from clearance.errors import ClearanceError
from clearance.model import canonical_json

__all__ = ["Upstream", "UpstreamError", "definition_digest"]

log = logging.getLogger("clearance.mcp")

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

    async def connect(self, task_group: anyio.abc.TaskGroup) -> None:
        """Connect, in a task of ``task_group`` that holds the connection until it is cancelled.

        Each upstream lives in a task of its own: the SDK's client runs task groups, and a
        connection that fails later (a server that exits) must end only its own calls, not
        cancel every upstream entered beside it. A failure to connect is raised here, as
        :class:`UpstreamError`.
        """
        failure = await task_group.start(self._run)
        if failure is not None:
            raise failure

    async def _run(self, *, task_status: anyio.abc.TaskStatus[UpstreamError | None] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        where = cfg.url or " ".join([cfg.command or "", *cfg.args])
        named = f" {self.name}" if self.name else ""
        started = False
        try:
            async with AsyncExitStack() as stack:
                self.client = await stack.enter_async_context(Client(self._target(cfg, stack), cache=None))
                started = True
                task_status.started(None)
                await anyio.sleep_forever()
        except Exception as exc:  # noqa: BLE001 - a command not found, a refused connection: one line, no traceback
            if not started:  # handed to connect() rather than raised, which would fail the whole task group
                task_status.started(UpstreamError(f"cannot reach upstream{named} ({where}): {_leaf(exc)}"))
            else:
                log.error("upstream%s (%s) is gone: %s", named, where, _leaf(exc))
        finally:
            self.client = None

    @staticmethod
    def _target(cfg: UpstreamConfig, stack: AsyncExitStack) -> Any:
        if cfg.command is not None:
            # The whole environment, as a launched server expects (the SDK passes only a safe few
            # variables by default): the gateway stands where the server would have been.
            return StdioServerParameters(command=cfg.command, args=cfg.args, env={**os.environ, **cfg.env}, cwd=cfg.cwd)
        if cfg.headers:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = stack.push_async_callback  # the client is closed with the connection
            client = httpx2.AsyncClient(headers=cfg.headers, timeout=httpx2.Timeout(30.0, read=300.0))
            http(client.aclose)
            return streamable_http_client(cfg.url, http_client=client)  # type: ignore[arg-type]
        return cfg.url

    def _connected(self) -> Client:
        if self.client is None:
            raise UpstreamError(f"upstream {self.name or self.config.url or self.config.command} is not connected")
        return self.client

    async def list_tools(self) -> list[types.Tool]:
        client = self._connected()
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return await self._connected().call_tool(name, arguments)
