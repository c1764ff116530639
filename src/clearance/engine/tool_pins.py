"""Tool definitions pinned in the audit chain: a defence against tool poisoning.

A gateway in front of MCP servers passes each tool's definition (name, description, schema)
to the model, so a server that quietly rewrites a description can steer the agent. Each
definition's digest is recorded the first time a source shows it (``tool.seen``); a later,
different digest is recorded as ``tool.changed`` and stays *changed* until a person accepts
it (``tool.accepted``). The record lives in the hash chain itself, so it is as durable and
as tamper-evident as the decisions, and every process on the store sees the same pins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clearance.engine import audit
from clearance.errors import NotFound
from clearance.store import SqlStore, SqlTx

__all__ = ["ToolPin", "ToolPins"]

SEEN, CHANGED, ACCEPTED = "tool.seen", "tool.changed", "tool.accepted"


@dataclass(frozen=True)
class ToolPin:
    """One tool of one source: the definition accepted and the one last seen."""

    source: str
    tool: str
    accepted: str
    current: str

    @property
    def changed(self) -> bool:
        return self.current != self.accepted

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "tool": self.tool, "accepted": self.accepted, "current": self.current,
                "changed": self.changed}  # fmt: skip


class ToolPins:
    """The pins of every source's tools, read from and written to the audit chain."""

    def __init__(self, store: SqlStore, clock: Callable[[], datetime]) -> None:
        self.store, self.clock = store, clock

    def observe(self, source: str, digests: Mapping[str, str]) -> dict[str, ToolPin]:
        """Compare a listing (tool -> digest) with the pins, record what is new or changed, in
        one transaction, and return each listed tool's pin."""
        with self.store.read() as tx:
            pins = _pins(tx, source)
        if all(tool in pins and pins[tool].current == digest for tool, digest in digests.items()):
            return {tool: pins[tool] for tool in digests}  # the usual case: nothing to write
        now = self.clock()
        with self.store.write() as tx:
            pins = _pins(tx, source)  # again, under the writer lock: another gateway may have written since
            events: list[tuple[str, dict[str, Any]]] = []
            for tool, digest in sorted(digests.items()):
                pin = pins.get(tool)
                if pin is None:
                    events.append((SEEN, {"source": source, "tool": tool, "digest": digest}))
                    pins[tool] = ToolPin(source, tool, digest, digest)
                elif digest != pin.current:
                    events.append((CHANGED, {"source": source, "tool": tool, "digest": digest, "previous": pin.current,
                                             "accepted": pin.accepted}))  # fmt: skip
                    pins[tool] = ToolPin(source, tool, pin.accepted, digest)
            if events:
                audit.append_all(tx, events, now=now)
        return {tool: pins[tool] for tool in digests}

    def accept(self, source: str, tool: str, *, by: str) -> ToolPin:
        """Accept the definition last seen of ``tool`` (its calls are no longer held back)."""
        now = self.clock()
        with self.store.write() as tx:
            pin = _pins(tx, source).get(tool)
            if pin is None:
                raise NotFound(f"no tool {tool!r} of {source!r} has been seen")
            if pin.changed:
                audit.append(tx, ACCEPTED, {"source": source, "tool": tool, "digest": pin.current, "by": by}, now=now)
        return ToolPin(source, tool, pin.current, pin.current)

    def list(self, source: str | None = None) -> list[ToolPin]:
        """Every pin, or one source's, by source and tool."""
        with self.store.read() as tx:
            pins = _pins(tx, source)
        return sorted(pins.values(), key=lambda p: (p.source, p.tool))


def _events(tx: SqlTx, type: str) -> Iterator[dict[str, Any]]:
    after = 0
    while batch := tx.query_events(type=type, after_seq=after, limit=500):
        for row in batch:
            yield {"seq": row["seq"], "type": type, **json.loads(row["body"])["payload"]}
        after = batch[-1]["seq"]


def _pins(tx: SqlTx, source: str | None) -> dict[str, ToolPin]:
    """Replay the pin events in chain order (of one source, or of all keyed ``source/tool``)."""
    rows = sorted((r for t in (SEEN, CHANGED, ACCEPTED) for r in _events(tx, t)), key=lambda r: r["seq"])
    pins: dict[str, ToolPin] = {}
    for r in rows:
        if source is not None and r["source"] != source:
            continue
        key = r["tool"] if source is not None else f"{r['source']}/{r['tool']}"
        pin = pins.get(key)
        if r["type"] == SEEN or pin is None:
            pins[key] = ToolPin(r["source"], r["tool"], r["digest"], r["digest"])
        elif r["type"] == CHANGED:
            pins[key] = ToolPin(pin.source, pin.tool, pin.accepted, r["digest"])
        elif r["digest"] == pin.current:  # an acceptance of what is current
            pins[key] = ToolPin(pin.source, pin.tool, r["digest"], pin.current)
    return pins
