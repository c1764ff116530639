"""The audit chain anchored outside the database: its head signed with Ed25519.

The hash chain alone shows an edited row, but whoever can write the database can also rewrite
every event, recompute every hash and move the stored head: the chain then holds together
again. A *checkpoint* is the head (``seq``, ``hash``) signed with a private key that the
database never sees. Kept elsewhere (a file, a webhook receiver, a ticket), it proves that the
store still holds exactly the history it signed: SHA-256 links every event before ``seq`` to
that hash, so a rewritten, reordered, inserted or removed event up to ``seq`` changes it, and a
history cut below ``seq`` lacks it. Nothing after ``seq`` is covered until the next checkpoint.

Checkpoints are made on demand (:meth:`Engine.checkpoint_audit`) and, with ``checkpoint_every``,
inside the write that carries the chain past each multiple of N events; each is also kept in
``audit_checkpoints``, where :func:`verify` checks it against the chain. Signing and checking
use the ``cryptography`` package; keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo
public), and a key is named by its id, a digest of the public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from clearance.engine import audit
from clearance.engine.audit import AuditReport
from clearance.engine.reconcile import Reconciler
from clearance.errors import AnchorError
from clearance.model import canonical_json
from clearance.store import SqlTx

__all__ = ["FORMAT", "Checkpoint", "PrivateKeySource", "PublicKeySource", "checkpoint", "generate_keys", "key_id",
           "load_private_key", "load_public_key", "periodic", "settings_from_env", "sign", "verify"]  # fmt: skip

#: The format of a checkpoint document; part of what is signed.
FORMAT = "clearance.audit-checkpoint/1"

PrivateKeySource = Union[str, Path, Ed25519PrivateKey]
PublicKeySource = Union[str, Path, Ed25519PublicKey]


class Checkpoint(BaseModel):
    """The chain's head at ``seq`` was ``hash``, as signed at ``created_at`` by key ``key_id``.

    ``signature`` is base64 Ed25519 over :meth:`signed_bytes`. :meth:`document` is the text to
    keep (an anchor file); :meth:`parse` reads it back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = FORMAT
    seq: int
    hash: str
    created_at: str
    key_id: str
    signature: str

    def signed_bytes(self) -> bytes:
        return canonical_json({"format": self.format, "seq": self.seq, "hash": self.hash,
                               "created_at": self.created_at, "key_id": self.key_id}).encode()  # fmt: skip

    def document(self) -> str:
        return canonical_json(self.model_dump())

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "the checkpoint") -> Checkpoint:
        try:
            found = cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "document"
            raise AnchorError(f"{source} is not a clearance audit checkpoint ({where}: {first['msg']})") from None
        if found.format != FORMAT:
            raise AnchorError(f"{source} has format {found.format!r}; this version reads {FORMAT!r}")
        return found

    def verify_signature(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True


# -- keys ----------------------------------------------------------------------------------
def key_id(public_key: Ed25519PublicKey) -> str:
    """A key's name in checkpoints: ``ed25519:`` and 32 hex digits of SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"ed25519:{hashlib.sha256(raw).hexdigest()[:32]}"


def generate_keys(private_path: str | Path, public_path: str | Path | None = None, *,
                  overwrite: bool = False) -> tuple[Path, Path, str]:  # fmt: skip
    """Make a key pair: the private key readable by its owner only (0600), the public key beside
    it (``<private>.pub`` unless named). Refuses to replace existing files unless ``overwrite``.
    Returns both paths and the key id."""
    private_path = Path(private_path).expanduser()
    public_path = Path(public_path).expanduser() if public_path is not None else private_path.with_name(private_path.name + ".pub")
    if private_path == public_path:
        raise AnchorError("the private and the public key need different files")
    if not overwrite:
        for p in (private_path, public_path):
            if p.exists():
                raise AnchorError(f"{p} exists already; keep it, or pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(private_path, pem, 0o600, overwrite)
    _write(public_path, pub, 0o644, overwrite)
    return private_path, public_path, key_id(key.public_key())


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write ``data`` to a file created with ``mode`` (never wider for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise AnchorError(f"{path} exists already; keep it, or pass --force to replace it") from None
    with os.fdopen(fd, "wb") as f:
        if hasattr(os, "fchmod"):
            os.fchmod(f.fileno(), mode)  # an existing file keeps its old mode through O_TRUNC
        f.write(data)


def load_private_key(source: PrivateKeySource) -> Ed25519PrivateKey:
    """The private key in a PEM file; refused when others may read the file (POSIX)."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    path = Path(source).expanduser()
    data = _read(path, "private key")
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise AnchorError(f"the private key {path} may be read by others (mode {stat.S_IMODE(path.stat().st_mode):o}); "
                          f"chmod 600 {path}")  # fmt: skip
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AnchorError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"{path} holds a {type(key).__name__}, not an Ed25519 key (make one: clearance audit keygen)")
    return key


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """A public key from a PEM file (a private key file gives its public half)."""
    if isinstance(source, Ed25519PublicKey):
        return source
    path = Path(source).expanduser()
    data = _read(path, "public key")
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise AnchorError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


# -- signing ---------------------------------------------------------------------------------
def sign(key: Ed25519PrivateKey, seq: int, hash: str, created_at: datetime) -> Checkpoint:
    unsigned = Checkpoint(seq=seq, hash=hash, created_at=created_at.isoformat(), key_id=key_id(key.public_key()),
                          signature="")  # fmt: skip
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    return unsigned.model_copy(update={"signature": signature})


def _keep(tx: SqlTx, cp: Checkpoint) -> None:
    tx.insert_checkpoint({"seq": cp.seq, "key_id": cp.key_id, "hash": cp.hash,
                          "created_at": datetime.fromisoformat(cp.created_at), "document": cp.document()})  # fmt: skip


def checkpoint(tx: SqlTx, key: Ed25519PrivateKey, now: datetime) -> Checkpoint:
    """Sign the chain's head now and keep the checkpoint (within ``tx``, a write transaction);
    a head already signed with this key gives back the checkpoint made then."""
    seq, head = tx.chain_head()
    if seq == 0:
        raise AnchorError("the audit trail is empty: there is no head to sign yet")
    kept = tx.get_checkpoint(seq, key_id(key.public_key()))
    if kept is not None:
        return Checkpoint.parse(kept["document"])
    cp = sign(key, seq, head, now)
    _keep(tx, cp)
    return cp


def periodic(key: Ed25519PrivateKey, every: int) -> Callable[[SqlTx, Sequence[dict[str, Any]]], None]:
    """A hook for ``SqlStore.on_append``: sign the head in each write that carries the chain past
    a multiple of ``every`` events, in that write's own transaction (both commit, or neither)."""
    if every < 1:
        raise ValueError("checkpoint_every must be at least 1")

    def after_append(tx: SqlTx, rows: Sequence[dict[str, Any]]) -> None:
        first, last = rows[0]["seq"], rows[-1]
        if (first - 1) // every != last["seq"] // every:
            _keep(tx, sign(key, last["seq"], last["hash"], last["created_at"]))

    return after_append


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``Engine`` options from ``CLEARANCE_ANCHOR_KEY`` (a private key file) and
    ``CLEARANCE_CHECKPOINT_EVERY`` (N), as ``clearance serve`` passes them to its workers."""
    env = os.environ if environ is None else environ
    path, every = env.get("CLEARANCE_ANCHOR_KEY") or None, (env.get("CLEARANCE_CHECKPOINT_EVERY") or "0").strip()
    try:
        n = int(every)
    except ValueError:
        raise ValueError(f"CLEARANCE_CHECKPOINT_EVERY must be a whole number, not {every!r}") from None
    return {"anchor_key": path, "checkpoint_every": n} if path else ({"checkpoint_every": n} if n else {})


# -- verifying -------------------------------------------------------------------------------
@dataclass
class _Stored:
    """The checkpoints kept in the store, checked against each event as the chain is read."""

    by_seq: dict[int, list[Checkpoint]]
    keys: dict[str, Ed25519PublicKey]
    problems: list[tuple[int, str]]
    checked: int = 0
    #: The kept checkpoints that a trusted key signed and the chain still matches (their seqs).
    good: list[int] = field(default_factory=list)

    def see(self, row: dict[str, Any], body: dict[str, Any]) -> None:
        for cp in self.by_seq.get(row["seq"], ()):
            self.checked += 1
            key = self.keys.get(cp.key_id)
            if key is not None and not cp.verify_signature(key):
                self.problems.append((cp.seq, f"the checkpoint kept at event {cp.seq} has a signature that does not "
                                      f"verify with key {cp.key_id}: it was forged or altered"))  # fmt: skip
            elif cp.hash != row["hash"]:
                self.problems.append((cp.seq, f"history up to event {cp.seq} is not what the checkpoint kept there "
                                      f"(signed {cp.created_at}) recorded: events up to {cp.seq} were rewritten"))  # fmt: skip
            elif key is not None:
                self.good.append(cp.seq)


def _stored(tx: SqlTx, keys: dict[str, Ed25519PublicKey]) -> _Stored:
    found = _Stored({}, keys, [])
    for row in tx.checkpoints():
        try:
            cp = Checkpoint.parse(row["document"])
        except AnchorError as exc:
            found.problems.append((row["seq"], f"the checkpoint kept at event {row['seq']} is unreadable: {exc}"))
            continue
        if (cp.seq, cp.key_id, cp.hash) != (row["seq"], row["key_id"], row["hash"]):
            found.problems.append((row["seq"], f"the checkpoint kept at event {row['seq']} was altered: its columns "
                                   "disagree with its document"))  # fmt: skip
        found.by_seq.setdefault(cp.seq, []).append(cp)
    return found


def _report(chain: AuditReport, problems: list[tuple[int | None, str]], **kw: Any) -> AuditReport:
    if not problems:
        return AuditReport(True, chain.events_checked, problems=[], **kw)
    seq, text = problems[0]
    return AuditReport(False, chain.events_checked, seq, text, problems=[p for _, p in problems[:_SHOWN]],
                       problems_total=len(problems), **kw)  # fmt: skip


#: At most this many problems are listed in a report (all are counted).
_SHOWN = 50


def verify(tx: SqlTx, *, anchor: Checkpoint | None = None, public_keys: Iterable[PublicKeySource] = ()) -> AuditReport:
    """Check the chain, the checkpoints kept in the store, the state tables against the chain
    and, given an ``anchor`` (a checkpoint kept outside the store), that the store still holds
    the history it signed. ``public_keys`` are the keys trusted to have signed: the anchor's
    ``key_id`` must be one of them; kept checkpoints by other keys are checked against the
    chain only."""
    keys = {key_id(k): k for k in map(load_public_key, public_keys)}
    if anchor is not None:
        if anchor.key_id not in keys:
            known = ", ".join(sorted(keys)) or "none was given"
            raise AnchorError(f"the anchor was signed by key {anchor.key_id}, which is not a given public key ({known})")
        if not anchor.verify_signature(keys[anchor.key_id]):
            raise AnchorError(f"the anchor's signature does not verify with key {anchor.key_id}: the anchor file was "
                              "altered or forged")  # fmt: skip
    stored = _stored(tx, keys)
    rec = Reconciler()

    def see(row: dict[str, Any], body: dict[str, Any]) -> None:
        stored.see(row, body)
        rec.see(row, body)

    chain = audit.verify(tx, on_event=see)
    anchored = {"anchored_seq": anchor.seq if anchor is not None else None}
    problems: list[tuple[int | None, str]] = []
    if anchor is not None:
        good_seq = max((s for s in stored.good if s < anchor.seq), default=0)
        problems.extend(_against_anchor(tx, anchor, chain, good_seq))
    if not chain.ok:
        problems.append((chain.first_broken_seq, chain.problem or "the chain is broken"))
    else:
        head = tx.chain_head()[0]  # not events_checked: after a prune the chain starts at its cut
        problems.extend(stored.problems)
        problems.extend((cp.seq, f"a checkpoint was signed at event {cp.seq} but the chain holds {head} events: "
                         f"events {head + 1} to {cp.seq} were removed")
                        for seq, cps in sorted(stored.by_seq.items()) if seq > head for cp in cps)  # fmt: skip
        rows, state = rec.check(tx)
        problems.extend(state)
        anchored["rows_checked"] = rows
    return _report(chain, problems, checkpoints_checked=stored.checked, **anchored)


def _against_anchor(tx: SqlTx, anchor: Checkpoint, chain: AuditReport, good_seq: int) -> list[tuple[int | None, str]]:
    """What disagrees with the anchor: the event it signed is missing or has another hash."""
    row = tx.event_at(anchor.seq)
    signed = f"the anchor signed {anchor.created_at} by {anchor.key_id}"
    cut = tx.chain_cut()
    if row is None and cut is not None and anchor.seq <= cut[0]:
        if anchor.seq == cut[0] and anchor.hash == cut[1]:
            return []  # the prune cut the chain exactly there, and kept the hash the anchor signed
        return [(None, f"event {anchor.seq}, which {signed} covers, was archived by a prune (the chain now starts "
                 f"after event {cut[0]}): check that anchor against the archive, or anchor a newer checkpoint")]  # fmt: skip
    if row is None:
        (head, _) = tx.chain_head()
        stored = chain.events_checked if chain.ok else head
        return [(min(stored, anchor.seq - 1) + 1, f"event {anchor.seq}, which {signed} covers, is missing: the store "
                 f"holds {stored} events, so history was cut or replaced")]  # fmt: skip
    if row["hash"] != anchor.hash:
        since = f"after event {good_seq}, the newest checkpoint kept that still matches" if good_seq else "anywhere from event 1"
        return [(good_seq + 1, f"history up to event {anchor.seq} is not what {signed} covers: an event was rewritten, "
                 f"reordered, inserted or removed ({since})")]  # fmt: skip
    return []
