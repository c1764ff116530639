"""The gateway as an MCP server (the SDK's low-level ``Server``), over stdio or Streamable HTTP."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from clearance._version import __version__
from clearance.adapters.mcp.config import GatewayConfig
from clearance.adapters.mcp.gateway import Gateway
from clearance.adapters.mcp.upstream import Upstream
from clearance.engine import Engine

__all__ = ["mcp_server", "open_gateway", "serve_http", "serve_stdio"]


@asynccontextmanager
async def open_gateway(engine: Engine, config: GatewayConfig) -> AsyncIterator[Gateway]:
    """A :class:`Gateway` with every upstream connected (and closed on exit)."""
    upstreams = [Upstream(name if config.namespaced else None, cfg) for name, cfg in config.upstreams.items()]
    try:
        async with anyio.create_task_group() as connections:
            for upstream in upstreams:
                await upstream.connect(connections)
            gw = Gateway(engine, config, upstreams)
            await gw.list_tools()  # pins the definitions now, so a change shows before the first call
            if not engine.memory_warm:  # now, in a thread: calls are decided on the event loop
                await anyio.to_thread.run_sync(engine.warm_memory)
            async with anyio.create_task_group() as tg:
                tg.start_soon(gw.run_recorder)
                try:
                    yield gw
                finally:
                    gw.close_recorder()  # the task group then waits for what is queued to be recorded
            connections.cancel_scope.cancel()
    except BaseException as exc:  # task groups wrap errors in groups: a plain error stays plain
        sole = _sole(exc)
        if sole is not exc and isinstance(sole, Exception):
            raise sole from None
        raise


def _sole(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one error each, else ``exc``."""
    while len(inner := getattr(exc, "exceptions", ())) == 1:
        exc = inner[0]
    return exc


def mcp_server(gw: Gateway) -> Server[Any]:
    """An MCP server that answers ``tools/list`` and ``tools/call`` through ``gw``."""

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await gw.list_tools())

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        return await gw.call_tool(params.name, params.arguments, ctx.session.report_progress)

    return Server("clearance-mcp-gateway", version=__version__, on_list_tools=list_tools, on_call_tool=call_tool,
                  instructions="Tools served through clearance: each call is decided by policy before it runs; "
                               "refused calls return an error result that says why.")  # fmt: skip


async def serve_stdio(engine: Engine, config: GatewayConfig) -> None:
    """Serve on this process's stdin and stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    from clearance.adapters.mcp.stdio import event_loop_stdio

    async with open_gateway(engine, config) as gw:
        server = mcp_server(gw)
        async with event_loop_stdio() as streams, stdio_server(*(streams or ())) as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(engine: Engine, config: GatewayConfig, host: str, port: int, *, path: str = "/mcp",
                     log_level: str = "warning") -> None:  # fmt: skip
    """Serve Streamable HTTP at ``http://host:port/mcp`` until interrupted."""
    import uvicorn

    async with open_gateway(engine, config) as gw:
        app = mcp_server(gw).streamable_http_app(streamable_http_path=path, host=host)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on"))
        print(f"clearance mcp gateway on http://{host}:{port}{path}", file=sys.stderr, flush=True)
        await server.serve()
