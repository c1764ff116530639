"""A policy-enforcing MCP gateway on the official ``mcp`` SDK (``pip install 'clearance[mcp]'``).

``clearance mcp proxy`` runs it; :func:`serve_stdio`, :func:`serve_http` and :func:`open_gateway`
are the same from Python.
"""

from clearance.adapters.mcp.config import GatewayConfig, ToolSettings, UpstreamConfig, load_config, parse_config
from clearance.adapters.mcp.gateway import Gateway
from clearance.adapters.mcp.serve import mcp_server, open_gateway, serve_http, serve_stdio
from clearance.adapters.mcp.upstream import Upstream, definition_digest

__all__ = ["Gateway", "GatewayConfig", "ToolSettings", "Upstream", "UpstreamConfig", "definition_digest",
           "load_config", "mcp_server", "open_gateway", "parse_config", "serve_http", "serve_stdio"]  # fmt: skip
