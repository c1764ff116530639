"""What the CLI shows a person is inert (issue 17, defect 8): text an agent or caller wrote can
neither send the terminal escape sequences nor use Rich markup, so a call cannot print itself in
another colour or as another tool to the person approving it."""

from __future__ import annotations

import os
from pathlib import Path

from cli_support import run_cli

from clearance import Engine, parse_rules

HOSTILE = "\x1b[2K\r\x1b[32mharmless_lookup\x1b[0m [bold green]approved[/]"


def test_approvals_explain_and_kill_status_show_hostile_text_inert(tmp_path: Path) -> None:
    db = tmp_path / "esc.db"
    with Engine(db) as engine:
        engine.apply_rules(parse_rules("rules:\n  - id: ask\n    tool: refund_payment\n    effect: require_approval\n"))
        d = engine.evaluate({"tool": "refund_payment", "arguments": {"note": HOSTILE}, "actor": "agent-7"})
        engine.report_outcome(d.request_id, "succeeded", description=HOSTILE)
        engine.activate_kill_switch(tool="other", reason=HOSTILE)
    env = {**os.environ, "COLUMNS": "400", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    shows_it = (["approvals", "show", d.approval_id], ["explain", d.request_id], ["kill-switch", "status"],
                ["decisions", "show", d.request_id])  # fmt: skip
    for args in (["approvals", "list"], *shows_it):
        res = run_cli(["--db", str(db), *args], env=env)
        assert res.returncode == 0, res.stderr
        shown = res.stdout
        # Only our own styling reaches the terminal: no clear-line, no carriage return, not the hostile green.
        assert "\x1b[2K" not in shown and "\r" not in shown and "\x1b[32mharmless" not in shown, (args, shown)
        if args in shows_it:
            spelled = ("\\x1b[32mharmless_lookup\\x1b[0m", "\\u001b[32mharmless_lookup\\u001b[0m")  # text, or inside JSON
            assert any(f"{s} [bold green]approved[/]" in shown for s in spelled), (args, shown)
