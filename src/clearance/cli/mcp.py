"""``clearance mcp``: the MCP gateway (``proxy``) and the tool definitions it pinned (``tools``, ``accept``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from clearance.cli import render

mcp_app = typer.Typer(help="Put MCP servers' tools under clearance: a gateway in front of them.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]


def _pairs(values: Optional[list[str]], option: str) -> dict[str, str]:
    out = {}
    for item in values or ():
        tool, sep, arg = item.partition("=")
        if not sep or not tool or not arg:
            raise typer.BadParameter(f"expected TOOL=ARGUMENT, got {item!r}", param_hint=option)
        out[tool] = arg
    return out


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    return host.strip("[]"), int(port)


@mcp_app.command("proxy")
def proxy(
    command: Annotated[Optional[list[str]], typer.Argument(help="The upstream server's command, after '--'.")] = None,
    rules: Annotated[Optional[Path], typer.Option("--rules", help="Judge with this rules file instead of the applied policy.")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Who makes the calls (default mcp-client).")] = None,
    domain: Annotated[Optional[str], typer.Option(help="Domain of the calls (default mcp).")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="SQLite file or database URL (default: the global --db).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file naming upstreams, tools and settings.")] = None,
    upstream_url: Annotated[Optional[str], typer.Option("--upstream-url", help="Proxy a Streamable HTTP server.")] = None,
    listen: Annotated[Optional[str], typer.Option("--listen", help="Serve Streamable HTTP on HOST:PORT (default: stdio).")] = None,
    value: Annotated[Optional[list[str]], typer.Option("--value", help="TOOL=ARGUMENT holding the value at stake (repeatable).")] = None,
    target: Annotated[Optional[list[str]], typer.Option("--target", help="TOOL=ARGUMENT naming the target (repeatable).")] = None,
    approval_wait: Annotated[Optional[float], typer.Option("--approval-wait", min=0, help="Seconds a call waits for approval (default 120).")] = None,
    block_changed_tools: Annotated[Optional[bool], typer.Option("--block-changed-tools/--report-changed-tools",
                                   help="Hold back a tool whose definition changed until accepted (default: report only).")] = None,  # fmt: skip
) -> None:
    """Serve an MCP server's tools with every call decided first. Stdio by default:

    clearance mcp proxy --rules rules.yaml --actor claude -- npx -y @modelcontextprotocol/server-github
    """
    if command and upstream_url:
        raise typer.BadParameter("give a command after '--' or --upstream-url, not both")
    tools: dict[str, Any] = {}
    for tool, arg in _pairs(value, "--value").items():
        tools.setdefault(tool, {})["value"] = arg
    for tool, arg in _pairs(target, "--target").items():
        tools.setdefault(tool, {})["target"] = arg
    address = _host_port(listen) if listen is not None else None
    if address is not None and address[0] not in ("127.0.0.1", "localhost", "::1"):
        render.err.print(f"[yellow]warning:[/] serving on {address[0]}: whoever reaches this port calls the tools as "
                         "this gateway's actor; the gateway checks no credentials (keep it on loopback or behind a proxy "
                         "that does)")  # fmt: skip
    if not (config or command or upstream_url):
        raise typer.BadParameter("give the upstream: a command after '--', --upstream-url or --config")
    import anyio  # the SDK loads only once the command line is known to be sound

    from clearance.adapters.mcp import load_config, parse_config, serve_http, serve_stdio
    from clearance.cli import _engine, state

    settings = {"actor": actor, "domain": domain, "approval_wait_seconds": approval_wait,
                "block_changed_tools": block_changed_tools, "tools": tools or None}  # fmt: skip
    if config is not None:
        if command or upstream_url:
            raise typer.BadParameter("the upstreams are named in --config; give no command or --upstream-url")
        cfg = load_config(config, **settings)
    else:
        upstream = {"url": upstream_url} if upstream_url else {"command": command[0], "args": command[1:]}  # type: ignore[index]
        cfg = parse_config({"upstreams": {"upstream": upstream}, "namespaced": False,
                            **{k: v for k, v in settings.items() if v is not None}}, "command line")  # fmt: skip
    if db is not None:
        state.db = db
    with _engine(rules=rules) as engine:
        if address is not None:
            anyio.run(serve_http, engine, cfg, *address)
        else:
            anyio.run(serve_stdio, engine, cfg)


@mcp_app.command("tools")
def tools_list(
    source: Annotated[Optional[str], typer.Option(help="Only this upstream (its name, or the name its server gives).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The tool definitions the gateway has pinned, and which changed since they were accepted."""
    from clearance.cli import _engine

    with _engine() as engine:
        pins = engine.tool_pins.list(source)
    if as_json:
        render.emit_json([p.as_dict() for p in pins])
        return
    if not pins:
        render.out.print("no tool definitions pinned yet")
    for p in pins:
        mark = "[bold red]changed[/]" if p.changed else "[green]accepted[/]"
        render.out.print(f"{render.safe(p.source)}  {render.safe(p.tool):<32} {mark}  {p.current[:12]}")


@mcp_app.command("accept")
def accept(
    tool: Annotated[str, typer.Argument(help="The tool's own name at its upstream.")],
    source: Annotated[str, typer.Option(help="Its upstream (its name, or the name its server gives).")],
    by: Annotated[Optional[str], typer.Option("--by", help="Who accepts it (recorded in the audit trail).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Accept a tool's changed definition, so that the gateway serves it again."""
    from clearance.cli import _engine, _who

    with _engine() as engine:
        pin = engine.tool_pins.accept(source, tool, by=_who(by))
    if as_json:
        render.emit_json(pin.as_dict())
    else:
        render.out.print(f"accepted {render.safe(tool)} of {render.safe(source)} ({pin.current[:12]})")
