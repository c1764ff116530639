"""A policy-enforcing MCP gateway on the official ``mcp`` SDK (``pip install 'clearance[mcp]'``).

``clearance mcp proxy`` runs it; :func:`serve_stdio`, :func:`serve_http` and :func:`gateway`
are the same from Python.
"""

from clearance.adapters.mcp.config import GatewayConfig, ToolSettings, UpstreamConfig, load_config, parse_config
from clearance.adapters.mcp.gateway import Gateway
from clearance.adapters.mcp.serve import gateway, mcp_server, serve_http, serve_stdio
from clearance.adapters.mcp.upstream import Upstream, definition_digest

__all__ = ["Gateway", "GatewayConfig", "ToolSettings", "Upstream", "UpstreamConfig", "definition_digest", "gateway",
           "load_config", "mcp_server", "parse_config", "serve_http", "serve_stdio"]  # fmt: skip
