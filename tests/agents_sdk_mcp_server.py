"""A small MCP server (stdio, the official ``mcp`` SDK) for tests/test_agents_sdk.py: its one tool
writes a line to the file named by its first argument each time it really runs."""

from __future__ import annotations

import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("credits")


@server.tool()
def issue_credit(customer_id: str, amount: float) -> str:
    """Issue store credit to a customer."""
    with Path(sys.argv[1]).open("a") as f:
        f.write(f"issue_credit {customer_id} {amount}\n")
    return f"credited {amount:.2f} to {customer_id}"


if __name__ == "__main__":
    server.run("stdio")
