"""Run the app with uvicorn: in the foreground (``clearance serve``) or in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearance.engine import Engine
from clearance.engine.schema import require_current_schema

if TYPE_CHECKING:
    from clearance.server.retention import RetentionSettings
    from clearance.server.warmup import MemorySettings

__all__ = ["ServerThread", "announce", "serve"]


def announce(engine: Engine, host: str, port: int, db: str | Path | None = None) -> str:
    """What ``clearance serve`` prints at start: where the dashboard is and, while the store has
    no admin key, how to make the first one."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    lines = [f"clearance: dashboard at http://{shown}:{port}/  (API under /v1, OpenAPI at /v1/openapi.json)"]
    if not any(k.role == "admin" for k in engine.keys.list()):
        where = f"--db {db} " if db is not None else ""
        lines.append("clearance: no admin API key yet. Make the first one, then sign in to the dashboard with it:\n"
                     f"    clearance {where}keys create NAME --role admin")  # fmt: skip
    return "\n".join(lines)


def serve(db: str | Path | None, *, host: str = "127.0.0.1", port: int = 8080, max_body_bytes: int | None = None,
          log_level: str = "info", json_logs: bool = True, workers: int = 1, webhook_urls: Sequence[str] = (),
          webhook_secret: str | None = None, memory: MemorySettings | None = None,
          retention: RetentionSettings | None = None) -> None:  # fmt: skip
    """Run the server in the foreground; with ``workers > 1``, that many processes share the port
    (and the store: idempotency keys and API keys live there, so any worker may answer a retry).
    A store whose schema is behind this release is refused (``SchemaOutOfDate``): upgrading is
    ``clearance db upgrade``'s job, done once, not every replica's on start.

    Webhooks go to ``webhook_urls`` (else ``CLEARANCE_WEBHOOK_URLS``), signed with
    ``webhook_secret`` (else ``CLEARANCE_WEBHOOK_SECRET``); every worker runs a sender and
    the store makes sure each event is sent by one of them. ``memory``: warm-up and snapshots
    (:mod:`clearance.server.warmup`); ``retention``: :mod:`clearance.server.retention`."""
    import logging

    import uvicorn

    from clearance.server.app import DEFAULT_MAX_BODY_BYTES, create_app
    from clearance.server.middleware import json_log_formatter
    from clearance.server.webhooks import WebhookSettings

    webhooks = WebhookSettings.resolve(webhook_urls, webhook_secret)  # bad settings fail here, before serving
    # Replicas share the database: none migrates it under the others (`clearance db upgrade` does).
    require_current_schema(db)

    if json_logs:
        handler = logging.StreamHandler()
        handler.setFormatter(json_log_formatter())
        for name in ("clearance.server", "clearance.server.access"):
            lg = logging.getLogger(name)
            lg.handlers[:] = [handler]
            lg.setLevel(log_level.upper())
            lg.propagate = False
    # Memory's warm-up progress and snapshot warnings are shown in either log format.
    plain = logging.StreamHandler()
    plain.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    for name in ("clearance.memory",) if json_logs else ("clearance.memory", "clearance.server"):
        lg = logging.getLogger(name)
        if not lg.handlers:
            lg.addHandler(handler if json_logs else plain)
            lg.setLevel(log_level.upper())
            lg.propagate = False
    if workers > 1:
        import os
        import secrets

        engine = Engine(db)  # migrate once, before the workers start
        os.environ["CLEARANCE_DB"] = engine.store.url
        print(announce(engine, host, port, db), flush=True)
        engine.close()
        # One key signs dashboard sessions in every worker, so any worker may answer a page.
        os.environ.setdefault("CLEARANCE_SESSION_SECRET", secrets.token_urlsafe(32))
        os.environ["CLEARANCE_MAX_BODY_BYTES"] = str(max_body_bytes or DEFAULT_MAX_BODY_BYTES)
        if memory is not None:
            os.environ["CLEARANCE_MEMORY_WARMUP"] = memory.warmup
            os.environ["CLEARANCE_MEMORY_SNAPSHOT_SECONDS"] = str(-1 if memory.snapshot_seconds is None else memory.snapshot_seconds)
        if retention is not None and retention.days is not None:
            os.environ["CLEARANCE_RETENTION_DAYS"] = str(retention.days)
            if retention.archive_dir:
                os.environ["CLEARANCE_ARCHIVE_DIR"] = retention.archive_dir
        if webhooks is not None:
            os.environ["CLEARANCE_WEBHOOK_URLS"] = ",".join(webhooks.urls)
            os.environ["CLEARANCE_WEBHOOK_SECRET"] = webhooks.secret
        uvicorn.run("clearance.server.app:from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level, access_log=not json_logs, timeout_keep_alive=30)  # fmt: skip
        return
    app = create_app(db, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES, webhooks=webhooks, freeze_gc=True,
                     memory=memory, retention=retention)  # fmt: skip
    print(announce(app.state.engine, host, port, db), flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=not json_logs,
                timeout_keep_alive=30)  # fmt: skip


class ServerThread:
    """The server on ``127.0.0.1`` and a free port, in a daemon thread::

        with ServerThread("clearance.db") as server:
            engine = RemoteEngine(server.url, api_key=token)
    """

    def __init__(self, engine: Engine | str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 **app_kw: Any) -> None:  # fmt: skip
        import uvicorn

        from clearance.server.app import create_app

        self.app = create_app(engine, **app_kw)
        self.engine: Engine = self.app.state.engine
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name=f"clearance-server-{self.port}")  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the clearance server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
