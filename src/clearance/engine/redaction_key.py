"""Where a store's redaction key comes from: never from the database it protects.

The key makes markers unguessable (a stolen database cannot be matched against a list of card
numbers) and seals what must come back whole, so it lives outside the data: given to the
engine, or ``CLEARANCE_REDACTION_KEY``, or a key file (``CLEARANCE_REDACTION_KEY_FILE``, else
beside a SQLite file as ``<file>.redaction-key``, else the user's
``~/.config/clearance/redaction.key``), made with mode 0600 on first use. An in-memory store
gets a key that lives as long as it does. Every process and server that shares a store must
share its key (memory's "same card" and claims compare keyed hashes).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["ENV_KEY", "ENV_KEY_FILE", "key_file_for", "resolve_key"]

ENV_KEY = "CLEARANCE_REDACTION_KEY"
ENV_KEY_FILE = "CLEARANCE_REDACTION_KEY_FILE"


def key_file_for(url: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The key file a store uses by default (``None``: an in-memory store, no file)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEY_FILE):
        return Path(env[ENV_KEY_FILE]).expanduser()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return None
        return Path(database + ".redaction-key")
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "clearance" / "redaction.key"


def resolve_key(url: str, explicit: bytes | str | None = None, environ: Mapping[str, str] | None = None) -> bytes:
    """The store's key: ``explicit``, the environment's, or the key file's (made if missing)."""
    env = os.environ if environ is None else environ
    given = explicit if explicit is not None else env.get(ENV_KEY) or None
    if given is not None:
        raw = given.encode() if isinstance(given, str) else bytes(given)
        if len(raw) < 16:
            raise ValueError(f"a redaction key has at least 16 bytes ({ENV_KEY} or redaction_key)")
        return raw
    path = key_file_for(url, env)
    if path is None:
        return secrets.token_bytes(32)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _read(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return _read(path)


def _read(path: Path) -> bytes:
    for _ in range(50):  # a file another process has just created may not be written yet
        text = path.read_text(encoding="ascii").strip()
        if text:
            if len(text) < 16:
                raise ValueError(f"the redaction key in {path} is shorter than 16 characters")
            return text.encode()
        import time

        time.sleep(0.01)
    raise ValueError(f"the redaction key file {path} is empty")
