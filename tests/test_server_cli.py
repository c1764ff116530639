"""``clearance keys`` and ``clearance serve``: keys made on the command line work against a
server process, and a key revoked on the command line is refused by it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from server_support import cli, create_key_cli, start_process, stop_process


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    created = cli(db, "keys", "create", "billing", "--role", "approver", "--identity", "bill", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["role"] == "approver" and key["identity"] == "bill" and key["token"].startswith(f"clr_{key['key_id']}_")
    listed = json.loads(cli(db, "keys", "list", "--json").stdout)
    assert [k["key_id"] for k in listed] == [key["key_id"]] and "token" not in listed[0]
    text = cli(db, "keys", "list").stdout
    assert key["key_id"] in text and "approver" in text and key["token"] not in text
    assert cli(db, "keys", "revoke", key["key_id"]).returncode == 0
    assert json.loads(cli(db, "keys", "list", "--json").stdout) == []
    assert len(json.loads(cli(db, "keys", "list", "--all", "--json").stdout)) == 1
    again = cli(db, "keys", "revoke", key["key_id"], "--json")
    assert json.loads(again.stdout) == {"key_id": key["key_id"], "revoked": False}
    missing = cli(db, "keys", "revoke", "0000000000000000")
    assert missing.returncode == 1 and "no API key" in missing.stderr
    bad_role = cli(db, "keys", "create", "x", "--role", "root")
    assert bad_role.returncode == 1 and "role must be one of" in bad_role.stderr
    events = json.loads(cli(db, "audit", "list", "--json").stdout)
    assert [e["type"] for e in events] == ["api_key.created", "api_key.revoked"]


def test_a_key_revoked_on_the_command_line_is_refused_by_a_running_server(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    token = create_key_cli(db, "bot", "agent")
    proc, url = start_process(db)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/v1/whoami", headers=headers).json()["identity"] == "bot"
        key_id = token.split("_")[1]
        assert cli(db, "keys", "revoke", key_id).returncode == 0
        deadline = time.monotonic() + 15  # servers trust a verified key for up to a second
        while httpx.get(f"{url}/v1/whoami", headers=headers).status_code == 200:
            assert time.monotonic() < deadline, "the revoked key is still accepted"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/whoami", headers=headers).status_code == 401
    finally:
        stop_process(proc)
