"""The anchored audit trail (clearance.engine.anchor, clearance.engine.reconcile).

An attacker who can write the database rewrites history and recomputes every hash, the stored
head and drops the checkpoints kept in the store, so that the plain chain check passes again;
a checkpoint kept outside the store still shows each such tampering. A state row edited alone
disagrees with its audit event. Run on SQLite, and on PostgreSQL when it is there.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import cli_support
import pytest
from sqlalchemy import text
from test_audit import build_trail

from clearance import Engine
from clearance.engine import anchor, audit
from clearance.errors import AnchorError
from clearance.store import GENESIS


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    private, public, _ = anchor.generate_keys(d / "anchor.pem")
    return private, public


# -- the attacker's tools: rewrite the events table as if clearance had written it ----------------
def read_bodies(eng: Engine) -> list[dict[str, Any]]:
    with eng.store.read() as tx:
        return [json.loads(r["body"]) for r in tx.iter_events()]


def rechain(eng: Engine, bodies: list[dict[str, Any]]) -> None:
    """Write ``bodies`` as the whole trail: seq renumbered, every hash and the head recomputed,
    and the checkpoints kept in the store deleted. The plain chain check cannot tell."""
    from clearance.model import canonical_json

    prev, rows = GENESIS, []
    for seq, body in enumerate(bodies, start=1):
        body = {**body, "seq": seq}
        text_ = canonical_json(body)
        digest = audit.link_hash(prev, text_)
        rows.append({"seq": seq, "event_id": body["event_id"], "trace_id": body["trace_id"], "request_id": body["request_id"],
                     "type": body["type"], "created_at": body["created_at"], "body": text_, "prev_hash": prev, "hash": digest})  # fmt: skip
        prev = digest
    from datetime import datetime

    with eng.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
        conn.execute(text("DELETE FROM audit_checkpoints"))
        for r in rows:
            when = datetime.fromisoformat(r["created_at"])
            if conn.dialect.name == "sqlite":
                when = when.replace(tzinfo=None).isoformat(sep=" ")  # as the store keeps it
            conn.execute(text("INSERT INTO events (seq, event_id, trace_id, request_id, type, created_at, body, prev_hash, hash) "
                              "VALUES (:seq, :event_id, :trace_id, :request_id, :type, :created_at, :body, :prev_hash, :hash)"),
                         {**r, "created_at": when})  # fmt: skip
        conn.execute(text("UPDATE chain_head SET seq = :seq, hash = :hash WHERE id = 1"), {"seq": len(rows), "hash": prev})


def sql(eng: Engine, statement: str, **params: Any) -> None:
    with eng.store.engine.begin() as conn:
        conn.execute(text(statement), params)


def rewrite_body(eng: Engine, t: dict[str, Any]) -> None:
    """The approval of ``held`` now names mallory, in its event and in its row."""
    bodies = read_bodies(eng)
    for b in bodies:
        if b["type"] == "approval.resolved" and b["request_id"] == t["held"].request_id:
            b["payload"]["approver"] = "mallory"
    rechain(eng, bodies)
    sql(eng, "UPDATE approvals SET resolved_by = 'mallory' WHERE approval_id = :a", a=t["held"].approval_id)


def reorder(eng: Engine, t: dict[str, Any]) -> None:
    """The first call's outcome now reported after the second call was decided (no state row
    depends on that order, so only the anchor can tell)."""
    bodies = read_bodies(eng)
    assert [bodies[4]["type"], bodies[5]["type"]] == ["outcome.reported", "decision.made"]
    bodies[4], bodies[5] = bodies[5], bodies[4]
    rechain(eng, bodies)


def forge_insert(eng: Engine, t: dict[str, Any]) -> None:
    """A refusal that never happened, in the middle of history (no state row goes with it)."""
    bodies = read_bodies(eng)
    forged = {**bodies[4], "event_id": "evt_forged", "type": "proposal.refused", "request_id": None, "trace_id": None,
              "payload": {"tool": "wire_money", "reason": "forged", "actor": "bot", "domain": "default"}}  # fmt: skip
    rechain(eng, [*bodies[:5], forged, *bodies[5:]])


def truncate(eng: Engine, t: dict[str, Any]) -> None:
    """The newest two events (the kill switch on and off) removed."""
    bodies = read_bodies(eng)
    assert [b["type"] for b in bodies[-2:]] == ["kill_switch.activated", "kill_switch.deactivated"]
    rechain(eng, bodies[:-2])


def edit_decision_row(eng: Engine, t: dict[str, Any]) -> None:
    """The held refund's row says allowed; its event still says requires_approval."""
    sql(eng, "UPDATE decisions SET result = 'allowed' WHERE request_id = :r", r=t["late"].request_id)


#: Each tampering, and whether the plain check (no anchor) can still see it.
TAMPERS: list[tuple[Callable[[Engine, dict[str, Any]], None], bool]] = [
    (rewrite_body, False), (reorder, False), (forge_insert, False), (truncate, False), (edit_decision_row, True)]  # fmt: skip


def anchored_trail(location: str, private: Path) -> tuple[dict[str, Any], anchor.Checkpoint]:
    t = build_trail(location)  # type: ignore[arg-type]
    with Engine(location, anchor_key=private) as eng:
        return t, eng.checkpoint_audit()


def check_tampering(location: str, keys: tuple[Path, Path], tamper: Callable[..., None], plain_sees_it: bool) -> None:
    private, public = keys
    t, cp = anchored_trail(location, private)
    with Engine(location) as eng:
        clean = eng.verify_anchor(cp, [public])
        assert clean.ok and clean.anchored_seq == cp.seq == len(t["events"]) and clean.rows_checked > 0, clean
        tamper(eng, t)
        plain = eng.verify_audit()
        assert plain.ok is not plain_sees_it, plain  # recomputed hashes fool the plain check; an edited row does not
        report = eng.verify_anchor(cp, [public])
    assert not report.ok and report.problem, report
    assert report.first_broken_seq is None or 1 <= report.first_broken_seq <= cp.seq + 1, report


@pytest.mark.parametrize(("tamper", "plain_sees_it"), TAMPERS, ids=[f.__name__ for f, _ in TAMPERS])
def test_each_tampering_is_detected_by_the_anchor_on_sqlite(tmp_path: Path, keys: tuple[Path, Path],
                                                            tamper: Callable[..., None], plain_sees_it: bool) -> None:  # fmt: skip
    check_tampering(str(tmp_path / "c.db"), keys, tamper, plain_sees_it)


def test_each_tampering_is_detected_by_the_anchor_on_postgres(pg_url: str, keys: tuple[Path, Path]) -> None:
    from sqlalchemy import create_engine

    admin = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        for i, (tamper, plain_sees_it) in enumerate(TAMPERS):
            name = f"{pg_url.rsplit('/', 1)[1]}_{i}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                check_tampering(pg_url.rsplit("/", 1)[0] + "/" + name, keys, tamper, plain_sees_it)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def test_what_the_reports_say(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    db = str(tmp_path / "c.db")
    private, public = keys
    t, cp = anchored_trail(db, private)
    with Engine(db) as eng:
        truncate(eng, t)
        cut = eng.verify_anchor(cp, [public])
        assert f"event {cp.seq}" in cut.problem and "missing" in cut.problem, cut
        edit_decision_row(eng, t)
        edited = eng.verify_anchor(cp, [public])
    late = t["late"].request_id
    assert any(late in p and "result" in p for p in edited.problems), edited


def test_a_kept_checkpoint_shows_a_rewrite_and_narrows_where(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """Checkpoints kept every N events: left in place by the attacker they show the rewrite to the
    plain check; the anchor then names the first event after the newest one that still holds."""
    db = str(tmp_path / "c.db")
    private, public = keys
    with Engine(db, anchor_key=private, checkpoint_every=4) as eng:
        for i in range(10):
            eng.evaluate({"tool": "lookup", "actor": "bot", "arguments": {"i": i}})
        kept = eng.audit_checkpoints()
        assert [c.seq for c in kept] == [8, 4]
        assert all(c.verify_signature(anchor.load_public_key(public)) for c in kept)
        cp = eng.checkpoint_audit()
        assert cp.seq == 10 and eng.checkpoint_audit() == cp  # the same head signed once
        bodies = read_bodies(eng)  # event 6 rewritten, every hash after it and the head recomputed
        bodies[5]["payload"]["action"]["arguments"] = {"i": 99}
        kept_docs = [c.document() for c in kept]
        rechain(eng, bodies)
        with eng.store.engine.begin() as conn:  # the attacker leaves the kept checkpoints alone
            for c, doc in zip(kept, kept_docs):
                conn.execute(text("INSERT INTO audit_checkpoints (seq, key_id, hash, created_at, document) "
                                  "VALUES (:s, :k, :h, :t, :d)"), {"s": c.seq, "k": c.key_id, "h": c.hash, "t": c.created_at, "d": doc})  # fmt: skip
        plain = eng.verify_audit()
        assert not plain.ok and plain.first_broken_seq == 8 and "checkpoint" in plain.problem, plain
        report = eng.verify_anchor(cp, [public])
    assert not report.ok and report.first_broken_seq == 5, report  # after 4, the newest kept checkpoint that holds


def test_an_anchor_needs_its_own_key_and_an_intact_signature(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    db = str(tmp_path / "c.db")
    private, public = keys
    _, cp = anchored_trail(db, private)
    _, other, _ = anchor.generate_keys(tmp_path / "other.pem")
    with Engine(db) as eng:
        with pytest.raises(AnchorError, match="not a given public key"):
            eng.verify_anchor(cp, [other])
        forged = cp.model_copy(update={"seq": cp.seq - 1})
        with pytest.raises(AnchorError, match="signature does not verify"):
            eng.verify_anchor(forged, [public])
        (tmp_path / "bad.json").write_text('{"seq": "x"}')
        with pytest.raises(AnchorError, match="not a clearance audit checkpoint"):
            eng.verify_anchor(tmp_path / "bad.json", [public])
        assert eng.verify_anchor(cp, [other, public]).ok  # the key id picks the key


def test_keys_are_made_private_and_never_overwritten(tmp_path: Path) -> None:
    private, public, kid = anchor.generate_keys(tmp_path / "k.pem")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public == tmp_path / "k.pem.pub"
    assert anchor.key_id(anchor.load_public_key(public)) == kid == anchor.key_id(anchor.load_private_key(private).public_key())
    before = private.read_bytes()
    with pytest.raises(AnchorError, match="exists already"):
        anchor.generate_keys(private)
    assert private.read_bytes() == before
    os.chmod(private, 0o644)
    with pytest.raises(AnchorError, match="chmod 600"):
        anchor.load_private_key(private)
    with pytest.raises(ValueError, match="needs an anchor_key"):
        Engine(tmp_path / "c.db", checkpoint_every=5)
    with Engine(tmp_path / "c.db") as eng, pytest.raises(AnchorError, match="no anchor key"):
        eng.checkpoint_audit()


def test_a_periodic_checkpoint_commits_with_its_write_or_not_at_all(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, _ = keys
    with Engine(tmp_path / "c.db", anchor_key=private, checkpoint_every=2) as eng:
        eng.evaluate({"tool": "t", "actor": "a"})
        with pytest.raises(RuntimeError), eng.store.write() as tx:
            audit.append(tx, "x.y", {}, now=eng.clock())  # event 2: signed inside this transaction...
            assert tx.get_checkpoint(2, anchor.key_id(anchor.load_private_key(private).public_key())) is not None
            raise RuntimeError("rolled back")  # ...and gone with it
        assert eng.audit_checkpoints() == []
        eng.evaluate({"tool": "t", "actor": "a"})
        assert [c.seq for c in eng.audit_checkpoints()] == [2] and eng.verify_audit().ok


# -- the CLI and the server ----------------------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        _Receiver.got.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.got = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/anchors"
    server.shutdown()
    server.server_close()


def test_cli_keygen_checkpoint_and_verify(tmp_path: Path, receiver: str) -> None:
    from clearance.signing import verify as verify_webhook

    db = tmp_path / "c.db"
    t = build_trail(db)

    def cli(*args: str, **env: str) -> Any:
        return cli_support.run_cli(["--db", str(db), *args], timeout=120, env={**os.environ, **env})

    made = cli("audit", "keygen", str(tmp_path / "k.pem"), "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert stat.S_IMODE(os.stat(key["private_key"]).st_mode) == 0o600
    assert cli("audit", "keygen", str(tmp_path / "k.pem")).returncode == 1  # never overwritten

    out = cli("audit", "checkpoint", "--key", key["private_key"], "--out", str(tmp_path / "a.json"),
              "--webhook-url", receiver, "--webhook-secret", "s3cret")  # fmt: skip
    assert out.returncode == 0, out.stderr
    cp = anchor.Checkpoint.parse((tmp_path / "a.json").read_text())
    assert cp.seq == len(t["events"]) and cp.key_id == key["key_id"]
    ((headers, body),) = _Receiver.got
    assert anchor.Checkpoint.parse(json.dumps(verify_webhook("s3cret", body, headers))) == cp
    assert headers["Clearance-Event"] == "audit.checkpoint"
    printed = cli("audit", "checkpoint", "--latest")
    assert printed.returncode == 0 and anchor.Checkpoint.parse(printed.stdout) == cp

    good = cli("audit", "verify", "--anchor", str(tmp_path / "a.json"), "--public-key", key["public_key"])
    assert good.returncode == 0 and f"anchored at event {cp.seq}" in good.stdout, good.stdout + good.stderr
    with Engine(db) as eng:
        truncate(eng, t)
    assert cli("audit", "verify").returncode == 0  # the plain check is fooled
    bad = cli("audit", "verify", "--anchor", str(tmp_path / "a.json"), "--public-key", key["public_key"], "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False and json.loads(bad.stdout)["anchored_seq"] == cp.seq
    nokey = cli("audit", "verify", "--anchor", str(tmp_path / "a.json"))
    assert nokey.returncode == 2 and "--public-key" in nokey.stderr and "Traceback" not in nokey.stderr


def test_the_server_signs_on_demand_for_admins(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from app_support import InProcessApp, InProcessRemoteEngine

    from clearance.errors import ClearanceError

    private, public = keys
    with Engine(tmp_path / "c.db", anchor_key=private) as eng:
        _, admin = eng.keys.create("ops", "admin")
        _, agent = eng.keys.create("bot", "agent")
        with InProcessApp(eng) as app:
            InProcessRemoteEngine(app, agent).evaluate({"tool": "t", "actor": "bot"})
            cp = InProcessRemoteEngine(app, admin).checkpoint_audit()
            assert isinstance(cp, anchor.Checkpoint) and cp.verify_signature(anchor.load_public_key(public))
            with pytest.raises(ClearanceError):
                InProcessRemoteEngine(app, agent).checkpoint_audit()
        assert eng.verify_anchor(cp, [public]).ok


def test_the_server_takes_its_key_from_the_environment(tmp_path: Path, keys: tuple[Path, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from clearance.server import create_app

    monkeypatch.setenv("CLEARANCE_ANCHOR_KEY", str(keys[0]))
    monkeypatch.setenv("CLEARANCE_CHECKPOINT_EVERY", "2")
    eng = create_app(tmp_path / "c.db").state.engine
    try:
        for _ in range(3):
            eng.evaluate({"tool": "t", "actor": "a"})
        assert [c.seq for c in eng.audit_checkpoints()] == [2]
    finally:
        eng.close()


def test_settings_from_env() -> None:
    assert anchor.settings_from_env({}) == {}
    assert anchor.settings_from_env({"CLEARANCE_ANCHOR_KEY": "/k.pem", "CLEARANCE_CHECKPOINT_EVERY": "100"}) == {
        "anchor_key": "/k.pem", "checkpoint_every": 100}  # fmt: skip
    with pytest.raises(ValueError, match="whole number"):
        anchor.settings_from_env({"CLEARANCE_ANCHOR_KEY": "/k.pem", "CLEARANCE_CHECKPOINT_EVERY": "ten"})


# -- state rows edited alone: the plain check compares every state table with the chain ----------
def _policy_loosened(eng: Engine, t: dict[str, Any]) -> None:
    with eng.store.read() as tx:
        doc = json.loads(json.dumps(tx.get_policy(1)["document"]))
    doc["rules"][0]["require_approval_above"] = 1_000_000
    sql(eng, "UPDATE policies SET document = :d WHERE version = 1", d=json.dumps(doc))


ROW_EDITS: list[tuple[str, Callable[[Engine, dict[str, Any]], None], str]] = [
    ("decision result", edit_decision_row, "decision row"),
    ("approval shown to the approver", lambda eng, t: sql(eng, "UPDATE approvals SET data = :d WHERE approval_id = :a",
     d=json.dumps({"tool": "refund", "actor": "bot", "domain": "default", "value": 5.0, "arguments": {"order": 2},
                   "reason": "small"}), a=t["held"].approval_id), "(data)"),
    ("expired approval made approved", lambda eng, t: sql(eng, "UPDATE approvals SET status = 'approved', resolved_by = "
     "'mallory' WHERE approval_id = :a", a=t["late"].approval_id), "(status, resolved_by)"),
    ("execution status", lambda eng, t: sql(eng, "UPDATE executions SET status = 'not_run'"), "execution row"),
    ("outcome status", lambda eng, t: sql(eng, "UPDATE outcomes SET status = 'harmful'"), "outcome row"),
    ("rules loosened", _policy_loosened, "(document)"),
    ("API key made admin", lambda eng, t: sql(eng, "UPDATE api_keys SET role = 'admin' WHERE key_id = :k", k=t["key"]),
     "(role)"),
    ("API key forged", lambda eng, t: sql(eng, "INSERT INTO api_keys (key_id, secret_hash, name, role, identity, created_at) "
     "VALUES ('f0f0f0f0f0f0f0f0', 'x', 'evil', 'admin', 'evil', '2025-06-01 00:00:00')"), "not in the audit trail"),
    ("kill switch removed", lambda eng, t: sql(eng, "DELETE FROM kill_switches"), "calls it should block"),
    # The lean store keeps a decision's JSON only in its row, so the chain itself breaks too.
    ("decision row removed", lambda eng, t: sql(eng, "DELETE FROM decisions WHERE request_id = :r", r=t["ok"].request_id),
     "hash does not match its contents"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "said"), [e[1:] for e in ROW_EDITS], ids=[e[0] for e in ROW_EDITS])
def test_a_state_row_edited_alone_is_reported(tmp_path: Path, edit: Callable[..., None], said: str) -> None:
    db = tmp_path / "c.db"
    t = build_trail(db)
    with Engine(db) as eng:
        t["key"] = eng.keys.create("bot", "agent")[0].key_id
        eng.activate_kill_switch(domain="payments", reason="incident", by="oncall")
        assert eng.verify_audit().ok
        edit(eng, t)
        report = eng.verify_audit()
    assert not report.ok and any(said in p for p in report.problems), report


def test_redacted_rows_agree_with_their_redacted_events(tmp_path: Path) -> None:
    """Rows and events keep the same redacted copy, so secrets do not read as tampering."""
    card = "4111 1111 1111 1111"
    db = tmp_path / "c.db"
    build_trail(db)
    with Engine(db) as eng:
        d = eng.evaluate({"tool": "refund", "actor": "bot", "value": 10, "arguments": {"card": card, "password": "hunter2"}})
        eng.claim_execution(d.request_id, claimant="worker")
        eng.record_execution(d.request_id, "executed", {"charged": card}, None)
        eng.report_outcome(d.request_id, "succeeded", description=f"refunded to {card}")
        held = eng.evaluate({"tool": "refund", "actor": "bot", "value": 900, "arguments": {"card": card}})
        eng.resolve_approval(held.approval_id, "approved", approver="alice", comment=f"card {card} checked")
        assert card not in json.dumps([e.model_dump(mode="json") for e in eng.audit_events(limit=1000)])
        report = eng.verify_audit()
    assert report.ok and report.rows_checked >= 14, report
