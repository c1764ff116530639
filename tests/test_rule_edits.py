"""Rule edits are one engine operation in one transaction: two ``clearance serve`` processes on
one store, edited through both at once, lose no edit; and an edit keeps the rest of the file."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_support import start_process, stop_process

from clearance import Engine, parse_rules
from clearance.errors import ConflictError, NotFound
EDITS = 40  # per process


@pytest.mark.slow
def test_concurrent_edits_through_two_server_processes_are_all_kept(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules("rules:\n  - id: base\n    tool: t\n    max_value: 10\n"))
    _, token = engine.keys.create("ops", "admin")
    engine.close()
    servers = [start_process(db) for _ in range(2)]
    try:
        clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) for _, url in servers]

        def edit(n: int) -> None:
            client = clients[n % 2]
            rule_id = f"r{n}"
            r = client.post("/v1/rules", json={"id": rule_id, "tool": f"tool_{n}", "max_value": n + 1})
            assert r.status_code == 200, r.text
            r = client.post(f"/v1/rules/{rule_id}/pause")  # a second edit of the same rule, maybe through the other
            assert r.status_code == 200, r.text

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(edit, range(2 * EDITS)))
        final = clients[0].get("/v1/rules").json()
        for c in clients:
            c.close()
    finally:
        for proc, _ in servers:
            stop_process(proc)
    rules = {r["id"]: r for r in final["rules"]}
    assert set(rules) == {"base"} | {f"r{n}" for n in range(2 * EDITS)}
    assert all(rules[f"r{n}"]["status"] == "paused" and rules[f"r{n}"]["max_value"] == n + 1 for n in range(2 * EDITS))
    # The version history: one version per edit, each added and each paused exactly once, in order.
    with sqlite3.connect(db) as con:
        applied = [json.loads(b)["payload"] for (b,) in con.execute("SELECT body FROM events WHERE type = 'rules.applied' ORDER BY seq")]
        versions = [v for (v,) in con.execute("SELECT version FROM policies ORDER BY version")]
    assert versions == list(range(1, 2 + 4 * EDITS))
    added = [i for p in applied for i in p["added"]]
    changed = [i for p in applied for i in p["changed"]]
    assert sorted(added) == sorted(["base", *(f"r{n}" for n in range(2 * EDITS))])
    assert sorted(changed) == sorted(f"r{n}" for n in range(2 * EDITS))


def test_an_edit_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "e.db")
    engine.apply_rules(parse_rules("""
version: 1
risk: {approval_above: 0.2}
domains:
  payments: {risk: {block_above: 0.6}}
rules:
  - id: a
    tool: t
    max_value: 10
"""))
    info = engine.edit_rule("add", "b", parse_rules("rules:\n  - id: b\n    tool: u\n    effect: block\n").rules[0])
    assert info.added == ["b"]
    source = engine.current_rules().source
    assert source.risk is not None and source.risk.approval_above == 0.2
    assert source.domains["payments"].risk is not None and source.domains["payments"].risk.block_above == 0.6
    assert [r.id for r in source.rules] == ["a", "b"]
    assert engine.edit_rule("pause", "a").changed == ["a"]
    assert engine.current_rules().source.rules[0].status == "paused"
    with pytest.raises(ConflictError):
        engine.edit_rule("add", "a", source.rules[0])
    with pytest.raises(NotFound):
        engine.edit_rule("remove", "nope")
    assert engine.edit_rule("remove", "b").removed == ["b"]
    engine.close()
