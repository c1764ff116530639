"""The gateway's settings: its upstream MCP servers, who calls, and how each tool is read.

One model serves the YAML file (``clearance mcp proxy --config``) and the command line; a bad
file is refused whole at start, naming the field, before any upstream is launched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["GatewayConfig", "ToolSettings", "UpstreamConfig", "load_config", "SEPARATOR"]

#: Between an upstream's name and its tool's in a namespaced tool name (``github__create_issue``):
#: the characters every client accepts in a tool name are letters, digits, ``_`` and ``-``.
SEPARATOR = "__"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpstreamConfig(_Strict):
    """One upstream MCP server: a command run over stdio, or a Streamable HTTP URL."""

    command: str | None = Field(default=None, description="Executable that serves MCP over stdio.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Added to the gateway's own environment.")
    cwd: str | None = None
    url: str | None = Field(default=None, description="Streamable HTTP endpoint, e.g. http://127.0.0.1:8000/mcp.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every HTTP request (e.g. Authorization).")
    domain: str | None = Field(default=None, description="Domain of this upstream's calls (default: the gateway's).")

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (stdio) or url (Streamable HTTP)")
        return self


class ToolSettings(_Strict):
    """How one tool's call is read: which arguments hold the value at stake and the target."""

    value: str | None = Field(default=None, description="Argument holding the money or units at stake.")
    target: str | None = Field(default=None, description="Argument naming what the call acts on.")


class GatewayConfig(_Strict):
    """Everything the gateway needs besides the store."""

    upstreams: dict[str, UpstreamConfig]
    actor: str = "mcp-client"
    domain: str = "mcp"
    #: Tool name (as the client sees it, namespaced when there are named upstreams) -> settings.
    tools: dict[str, ToolSettings] = Field(default_factory=dict)
    approval_wait_seconds: float = Field(default=120.0, ge=0, description="How long a call waits for its approval.")
    progress_every_seconds: float = Field(default=5.0, gt=0, description="Progress notifications while it waits.")
    block_changed_tools: bool = Field(default=False, description="Hide and refuse a tool whose definition changed "
                                      "until it is accepted (clearance mcp accept).")  # fmt: skip
    #: Whether tool names carry their upstream's name (always with a config file's upstreams).
    namespaced: bool = True

    @model_validator(mode="after")
    def _names(self) -> GatewayConfig:
        if not self.upstreams:
            raise ValueError("name at least one upstream")
        for name in self.upstreams:
            if not re.fullmatch(r"[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*", name):
                raise ValueError(f"upstream name {name!r}: letters, digits, '-' and single '_' only")
        if len(self.upstreams) > 1 and not self.namespaced:
            raise ValueError("several upstreams need namespaced tool names")
        return self


def load_config(path: str | Path, **overrides: Any) -> GatewayConfig:
    """Read a YAML config; ``overrides`` (the command line's options that were given) win."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'upstreams'")
    return parse_config({**data, **{k: v for k, v in overrides.items() if v is not None}}, str(path))


def parse_config(data: dict[str, Any], where: str = "config") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from None
