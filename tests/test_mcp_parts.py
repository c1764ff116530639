"""The MCP gateway's parts that need no MCP server: tool pins in the audit chain, which tools the
policy blocks outright, the config file, and the command line's refusals."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from clearance.engine import Engine
from clearance.errors import NotFound
from clearance.policy import RuleFile, RuleSet, parse_rules
from clearance.policy.outright import blocked_outright
from cli_support import run_cli


def test_pins_record_first_sight_changes_and_acceptance(tmp_path: Path) -> None:
    with Engine(tmp_path / "c.db") as engine:
        pins = engine.tool_pins
        first = pins.observe("gh", {"a": "d1", "b": "d2"})
        assert not first["a"].changed and not first["b"].changed
        assert pins.observe("gh", {"a": "d1", "b": "d2"}) == first  # nothing new: nothing written
        assert len(engine.audit_events(type="tool.seen")) == 2

        changed = pins.observe("gh", {"a": "d1", "b": "d3"})["b"]
        assert changed.changed and changed.accepted == "d2" and changed.current == "d3"
        assert pins.observe("other", {"b": "d9"})["b"].changed is False  # sources are apart
        again = pins.observe("gh", {"b": "d4"})["b"]  # changed twice: still measured against what was accepted
        assert again.accepted == "d2" and again.current == "d4"
        assert [e.payload["digest"] for e in engine.audit_events(type="tool.changed")] == ["d3", "d4"]

        accepted = pins.accept("gh", "b", by="alice")
        assert not accepted.changed and accepted.accepted == "d4"
        assert not pins.observe("gh", {"b": "d4"})["b"].changed
        assert engine.audit_events(type="tool.accepted")[0].payload["by"] == "alice"
        assert [(p.source, p.tool, p.changed) for p in pins.list()] == [("gh", "a", False), ("gh", "b", False), ("other", "b", False)]
        with pytest.raises(NotFound):
            pins.accept("gh", "zzz", by="alice")
        assert engine.verify_audit().ok
        pins.observe("gh", {"a": "d5"})
    listed = run_cli(["--db", str(tmp_path / "c.db"), "mcp", "tools", "--source", "gh", "--json"])
    assert [(p["tool"], p["changed"]) for p in json.loads(listed.stdout)] == [("a", True), ("b", False)]


def _rules(text: str) -> RuleSet:
    return RuleSet.compile(parse_rules(text), "1")


def test_blocked_outright_only_for_what_holds_whatever_the_arguments(tmp_path: Path) -> None:
    rules = _rules("""
rules:
  - {id: deny, tool: "gh__delete*", deny_actors: ["bot-*"]}
  - {id: only-ops, domain: infra, allow_actors: [ops]}
  - {id: never, tool: drop_db, effect: block}
  - {id: big, tool: refund, max_value: 100, when: "value > 50"}
  - {id: paused, tool: echo, effect: block, status: paused}
  - {id: shadowed, tool: echo2, effect: block, status: shadow}
""")

    def hidden(tool: str, actor: str = "bot-1", domain: str = "mcp", switches: list = []) -> bool:  # noqa: B006
        return blocked_outright(rules, switches, tool=tool, actor=actor, domain=domain) is not None

    assert hidden("gh__delete_repo") and not hidden("gh__delete_repo", actor="alice")
    assert hidden("anything", domain="infra") and not hidden("anything", actor="ops", domain="infra")
    assert hidden("drop_db")
    assert not hidden("refund")  # its limits depend on the call
    assert not hidden("echo") and not hidden("echo2")  # a paused rule and a shadow rule block nothing
    with Engine(tmp_path / "c.db") as engine:
        engine.activate_kill_switch(tool="refund")
        switches = engine.kill_switches()
    assert hidden("refund", switches=switches) and not hidden("echo", switches=switches)
    assert blocked_outright(RuleSet.compile(RuleFile(), "0"), [], tool="x", actor="y", domain="z") is None


def test_config_errors_are_named(tmp_path: Path) -> None:
    from clearance.adapters.mcp import load_config

    bad = tmp_path / "g.yaml"
    for text, words in (("upstreams: {a: {}}", "give either command (stdio) or url"),
                        ("upstreams: {'a__b': {url: 'http://x'}}", "upstream name 'a__b'"),
                        ("upstreams: {a: {url: 'http://x'}}\nwait: 3", "wait: Extra inputs are not permitted"),
                        ("upstreams: {}", "at least one upstream"),
                        ("[1, 2", "not valid YAML")):  # fmt: skip
        bad.write_text(text)
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            load_config(bad)
    good = tmp_path / "ok.yaml"
    good.write_text("upstreams: {a: {url: 'http://x'}}\nactor: me")
    assert load_config(good, actor="you", domain=None).actor == "you"


def test_cli_refuses_bad_input_without_a_traceback(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    for args, code, words in ((["mcp", "proxy"], 2, "give the upstream"),
                              (["mcp", "proxy", "--listen", "nowhere", "--", "x"], 2, "expected HOST:PORT"),
                              (["mcp", "proxy", "--value", "refund", "--", "x"], 2, "expected TOOL=ARGUMENT"),
                              (["mcp", "accept", "echo", "--source", "nobody"], 1, "no tool 'echo' of 'nobody'")):  # fmt: skip
        done = run_cli(["--db", db, *args], input="")
        assert done.returncode == code and words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_an_upstream_that_cannot_be_reached_is_a_clearance_error(tmp_path: Path) -> None:
    """The CLI prints a ClearanceError as one line (exit 1); a missing command or a refused
    connection must become one, not a traceback through the SDK's task groups."""
    import anyio

    from clearance.adapters.mcp import Upstream, UpstreamConfig, open_gateway, parse_config
    from clearance.adapters.mcp.upstream import UpstreamError

    async def reach(config: UpstreamConfig) -> str:
        async with anyio.create_task_group() as tg:
            with pytest.raises(UpstreamError) as caught:
                await Upstream("shop", config).connect(tg)
        return str(caught.value)

    missing = anyio.run(reach, UpstreamConfig(command="no-such-command-anywhere"))
    assert missing.startswith("cannot reach upstream shop (no-such-command-anywhere): FileNotFoundError")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    refused = anyio.run(reach, UpstreamConfig(url=f"http://127.0.0.1:{port}/mcp"))
    assert "cannot reach upstream shop" in refused and "ConnectError" in refused

    async def open_it() -> None:  # the error leaves the gateway as itself, not inside task groups' groups
        config = parse_config({"upstreams": {"shop": {"command": "no-such-command-anywhere"}}})
        with Engine(tmp_path / "c.db") as engine:
            async with open_gateway(engine, config):
                pass

    with pytest.raises(UpstreamError, match="cannot reach upstream shop"):
        anyio.run(open_it)


def test_an_identical_call_finds_its_open_approval_until_it_has_run(tmp_path: Path) -> None:
    """What lets a retry (even from a restarted gateway) run under the approval given for the
    call it repeats, instead of asking a person again; never once it has run or was refused."""
    (tmp_path / "r.yaml").write_text("rules: [{id: ask, tool: refund, require_approval_above: 10}]")
    mcp = {"mcp": {"source": "shop", "tool": "refund"}}
    call = {"tool": "refund", "arguments": {"id": "o1"}, "actor": "a", "domain": "d", "value": 50, "context": mcp}
    with Engine(tmp_path / "c.db", rules=tmp_path / "r.yaml") as engine:
        assert engine.open_approval(call) is None
        first = engine.evaluate(call)
        assert engine.open_approval(call).request_id == first.request_id  # pending: wait for it
        assert engine.open_approval({**call, "arguments": {"id": "o2"}}) is None
        assert engine.open_approval({**call, "actor": "b"}) is None
        assert engine.open_approval({**call, "context": {}}) is None  # another face's call is not ours to run
        engine.resolve_approval(first.approval_id, "approved", approver="alice")
        assert engine.open_approval(call).request_id == first.request_id  # approved, not run: run it
        engine.claim_execution(first.request_id, claimant="test", arguments=call["arguments"])
        assert engine.open_approval(call) is None  # it ran (or may have): a new call is a new decision
        second = engine.evaluate(call)
        engine.resolve_approval(second.approval_id, "rejected", approver="alice")
        assert engine.open_approval(call) is None
