"""The command line as an operator meets it: each mistake a person can make ends in one or two
lines that say what is wrong and what to do, a non-zero exit code and no traceback (``--debug``
shows it). In-process (Typer's CliRunner) except where a real process matters: the piped
terminal width, and a read-only file system (a private mount namespace when run as root)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_cli
from typer.testing import CliRunner

from clearance.cli import app
from clearance.cli.store_access import StoreProblem

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RULES = ROOT / "examples" / "rules.yaml"


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args} raised {result.exception!r}")
    return result.exit_code, result.stdout, result.stderr


def refused(code: int, out: str, err: str, *needles: str) -> None:
    """Exit 1, one or two lines on stderr containing every needle, nothing on stdout, no traceback."""
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and 1 <= len(lines) <= 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err and out == ""


def test_version() -> None:
    from clearance import __version__

    code, out, _ = cli("--version")
    assert (code, out.strip()) == (0, f"clearance {__version__}")


def test_reading_commands_never_create_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "clearance.db"
    for args in (["audit", "verify"], ["approvals", "list"], ["rules", "show"], ["kill-switch", "status"],
                 ["keys", "list"], ["db", "status"], ["learning", "report"]):  # fmt: skip
        refused(*cli("--db", str(missing), *args), f"no store at {missing}: create it with `clearance init` or pass `--create`")
    # a writing command does not make missing folders either
    refused(*cli("--db", str(missing), "check", "--tool", "t"), f"no folder {missing.parent}", "--create")
    assert not missing.parent.exists()
    code, out, err = cli("--db", str(missing), "--create", "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["events_checked"] == 0 and missing.exists()
    assert f"note: created a new store at {missing}" in err  # a store made on the way is said
    code, _, err = cli("--db", str(missing), "check", "--tool", "t")
    assert code == 0 and "created" not in err
    fresh = tmp_path / "a" / "b" / "new.db"
    code, out, _ = cli("--db", str(fresh), "init", "--json")
    assert code == 0 and json.loads(out)["created"] is True and fresh.exists()
    code, out, _ = cli("--db", str(fresh), "init")
    assert code == 0 and "exists already" in out


def test_db_pointing_at_a_folder_or_a_file_that_is_no_database(tmp_path: Path) -> None:
    refused(*cli("--db", str(tmp_path), "audit", "verify"), f"{tmp_path} is a folder, not a store")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    refused(*cli("--db", str(notes), "check", "--tool", "t"), f"{notes} is not a clearance store (not a SQLite database)")
    assert notes.read_text() == "not a database\n"


def test_debug_lets_the_exception_through(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "--db", str(tmp_path), "audit", "verify"])
    assert isinstance(result.exception, StoreProblem)


def _read_only_runner(target: Path) -> list[str] | None:
    """The command prefix that runs a process with ``target`` read-only: for a non-root user,
    its permission bits; for root (whom they do not stop), a read-only bind mount of it in a
    private mount namespace (``unshare -m``). None where neither is possible."""
    if os.geteuid() != 0:
        target.chmod(0o555 if target.is_dir() else 0o444)
        return []
    if not shutil.which("unshare"):
        return None
    prefix = ["unshare", "-m", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"',
              "sh", str(target)]  # fmt: skip
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_store(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "c.db"
    assert cli("--db", str(db), "init")[0] == 0
    prefix = _read_only_runner(db if what == "file" else folder)
    if prefix is None:
        pytest.skip("cannot make a read-only store here: running as root without mount namespaces")
    try:
        res = subprocess.run([*prefix, sys.executable, "-m", "clearance", "--db", str(db), "check", "--tool", "t"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        (db if what == "file" else folder).chmod(0o755 if what == "folder" else 0o644)
    needle = f"the store {db} is read-only" if what == "file" else f"the folder {folder} of the store {db} is read-only"
    refused(res.returncode, res.stdout, res.stderr, needle)


def test_postgresql_without_its_driver_or_with_the_server_down(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"postgresql://clearance:secret@127.0.0.1:{port}/clearance"
    refused(*cli("--db", url, "audit", "verify"), f"cannot reach the database postgresql://clearance:***@127.0.0.1:{port}/clearance",
            "start PostgreSQL")  # fmt: skip
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    refused(*cli("--db", url, "audit", "verify"), "PostgreSQL needs its driver: pip install 'clearance[postgres]'")
    refused(*cli("--db", "mysql://u@h/d", "audit", "verify"), "not 'mysql'")


def test_the_demo_takes_a_file_not_a_url() -> None:
    refused(*cli("demo", "--demo-db", "postgresql://u@h/d"), "takes a SQLite file, not the URL postgresql://u@h/d")


def test_serve_without_the_server_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now fails as if it were not installed
    refused(*cli("--db", str(tmp_path / "c.db"), "serve"), "the server needs its extra: pip install 'clearance[server]'")


def test_step_run_without_credentials_or_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "step.yaml"
    config.write_text("model: gpt-4.1-mini\n")
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"user_prompt": "hello"}))
    db = str(tmp_path / "c.db")
    assert cli("--db", db, "init")[0] == 0
    refused(*cli("--db", db, "step", "run", "-c", str(config), "-i", str(tmp_path / "missing.json")),
            f"cannot read the input {tmp_path / 'missing.json'}: No such file")  # fmt: skip
    refused(*cli("--db", db, "step", "run", "-c", str(config), "-i", str(config)), "is not JSON")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [\n")
    refused(*cli("--db", db, "step", "run", "-c", str(broken), "-i", str(inputs)), "not valid YAML at line 2, column 1")
    refused(*cli("--db", db, "step", "run", "-c", str(config), "-i", str(inputs)), "no OpenAI credentials: set OPENAI_API_KEY")


def test_an_empty_rule_set_needs_allow_empty(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    empty = tmp_path / "empty.yaml"
    empty.write_text("version: 1\nrules: []\n")
    assert cli("--db", db, "rules", "apply", str(EXAMPLE_RULES))[0] == 0
    refused(*cli("--db", db, "rules", "apply", str(empty)), "has no rules: applying it would remove all 4 rule(s) in force",
            "--allow-empty")  # fmt: skip
    code, out, _ = cli("--db", db, "rules", "show", "--json")
    assert len(json.loads(out)["rules"]) == 4
    code, out, _ = cli("--db", db, "rules", "apply", str(empty), "--allow-empty", "--json")
    assert code == 0 and len(json.loads(out)["removed"]) == 4


def test_the_server_refuses_an_old_schema_until_db_upgrade(tmp_path: Path) -> None:
    from alembic import command

    from clearance.store import open_store
    from clearance.store.migrate import HEAD, alembic_config

    db = str(tmp_path / "old.db")
    store = open_store(db)
    command.downgrade(alembic_config(store.engine), "0004")
    store.close()
    refused(*cli("--db", db, "serve", "--port", "1"), "has schema 0004", f"needs {HEAD}", "clearance db upgrade")
    code, out, _ = cli("--db", db, "db", "status", "--json")
    assert code == 1 and json.loads(out)["current"] == "0004"
    code, out, _ = cli("--db", db, "db", "upgrade", "--json")
    assert code == 0 and (json.loads(out)["from"], json.loads(out)["to"]) == ("0004", HEAD)
    assert cli("--db", db, "db", "status")[0] == 0


def test_every_command_that_prints_data_takes_json() -> None:
    import typer.main

    group = typer.main.get_command(app)
    exempt = {"serve", "demo", "rules schema", "step run", "step stream",  # JSON always, or no data to print
              "audit checkpoint", "mcp proxy"}  # fmt: skip

    def walk(cmd: object, prefix: str) -> list[tuple[str, object]]:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            return [(prefix, cmd)]
        return [pair for name, sub in subs.items() for pair in walk(sub, f"{prefix} {name}".strip())]

    missing = [name for name, cmd in walk(group, "") if name not in exempt
               and not any("--json" in p.opts for p in cmd.params)]  # type: ignore[attr-defined]  # fmt: skip
    assert missing == []


def test_tables_wrap_and_are_never_cut(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    env = {k: v for k, v in os.environ.items() if k not in ("CLEARANCE_DB", "COLUMNS")}
    assert cli("--db", db, "rules", "apply", str(EXAMPLE_RULES))[0] == 0
    code, out, _ = cli("--db", db, "check", "--tool", "refund_payment", "--actor", "agent-7", "--domain",
                       "customer_transactions", "--value", "900", "--json")  # fmt: skip
    approval_id = json.loads(out)["approval_id"]
    reason = "refund_payment of 900.00 is above require_approval_above 500 in rule refunds-eu"
    for columns in (None, "60", "120"):  # piped: Rich's 80 columns unless COLUMNS says otherwise
        shown = run_cli(["--db", db, "approvals", "list"], env=env if columns is None else dict(env, COLUMNS=columns))
        assert shown.returncode == 0
        assert "…" not in shown.stdout
        assert approval_id in shown.stdout  # whole, on one line
        words = " ".join(line.strip(" │┃") for line in shown.stdout.splitlines())
        assert all(word in words.split() for word in reason.split()), shown.stdout
        assert max(map(len, shown.stdout.splitlines())) <= int(columns or 80), shown.stdout
