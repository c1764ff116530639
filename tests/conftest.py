"""The fixtures the test modules share. Plain helpers stay in the support modules
(``adapter_support``, ``server_support``, ``app_support``, ``openai_spec``), imported by name.

- ``serve``: scripted OpenAI-protocol servers (:class:`clearance.testing.ScriptedOpenAI`),
  stopped and checked at teardown by ``wire_check`` (by default against OpenAI's published
  spec, and no script problems); a module that tests the scripted server itself overrides
  ``wire_check`` with what it checks.
- ``db_path`` and ``engine``: the adapter suite's SQLite file (RULES applied) and its engine,
  once embedded and once remote (``CLEARANCE_TEST_ENGINES`` picks). The remote variant is a
  :class:`RemoteEngine` on the server's app in this process (``app_support``): the same app and
  routes as ``clearance serve``, on the same SQLite file, through ``httpx.ASGITransport``. Tests
  marked ``server_process`` get a real ``clearance serve`` process instead (see the marker).
- ``live``: the server with uvicorn on loopback in a thread, one key per role.
- ``pg_url``: a fresh PostgreSQL database for the module (skipped without a server, except in CI).

Temporary files (``tmp_path``) live in memory (``/dev/shm``) where there is one and no
``--basetemp`` is given: the store commits with ``synchronous=FULL``, and an fsync per commit on
disk made SQLite-heavy tests several times slower without testing anything more (no test cuts
the power; processes are killed, and what they wrote is in the page cache either way). The
directory is removed when the session ends; pass ``--basetemp DIR`` to keep the files.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from adapter_support import RULES, check_wire
from server_support import Live, make_keys

from clearance import Engine, parse_rules
from clearance.testing import ScriptedOpenAI

# --------------------------------------------------------------------------- scripted OpenAI servers


def check_served(server: ScriptedOpenAI) -> None:
    """Every exchange against OpenAI's spec, and no script problems (exhausted script, bad turns)."""
    check_wire(server)
    assert not server.problems, server.problems


@pytest.fixture
def wire_check() -> Callable[[ScriptedOpenAI], None]:
    """What ``serve`` checks of each of its servers at teardown (override it in a module)."""
    return check_served


@pytest.fixture
def serve(wire_check: Callable[[ScriptedOpenAI], None]) -> Iterator[Callable[..., ScriptedOpenAI]]:
    """``serve(*turns)`` -> a started server; stopped and checked by ``wire_check`` at teardown."""
    servers: list[ScriptedOpenAI] = []

    def make(*turns: Any) -> ScriptedOpenAI:
        server = ScriptedOpenAI(turns).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    for server in servers:
        wire_check(server)


# --------------------------------------------------------------------------- the adapter suite's engines

#: Which engines the adapter tests run against: ``embedded`` (an Engine in this process) and
#: ``remote`` (a RemoteEngine on the server app over the test's own database file; in this
#: process, or for ``server_process`` tests in a ``clearance serve`` process). Both run by
#: default, in CI too.
ENGINES = [e for e in os.environ.get("CLEARANCE_TEST_ENGINES", "embedded,remote").split(",") if e]


_MEMORY_TMP = Path("/dev/shm")


@pytest.hookimpl(tryfirst=True)  # before pytest's own tmp_path set-up reads the option
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None and _MEMORY_TMP.is_dir() and os.access(_MEMORY_TMP, os.W_OK):
        root = tempfile.mkdtemp(prefix="clearance-tests-", dir=_MEMORY_TMP)
        config.option.basetemp = str(Path(root) / "tmp")  # pytest empties basetemp first: a fresh child of ours
        config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    config.addinivalue_line(
        "markers",
        "server_process(why): the remote variant of this test talks to a real `clearance serve` process, "
        "not to the app in this process (say why: what only a separate process shows)",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The test's own SQLite file (the remote variant's server runs on it too)."""
    return tmp_path / "clearance.db"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, db_path: Path) -> Iterator[Any]:
    eng = Engine(db_path)
    eng.apply_rules(parse_rules(RULES))
    if request.param == "embedded":
        yield eng
        eng.close()
        return
    if request.param != "remote":
        eng.close()
        raise ValueError(f"CLEARANCE_TEST_ENGINES names an unknown engine {request.param!r} (embedded, remote)")
    _, token = eng.keys.create("adapter-tests", "admin")
    store = SimpleNamespace(url=eng.store.url)  # for tests that locate the database file
    if request.node.get_closest_marker("server_process") is None:
        yield from _in_process(eng, token, store)
    else:
        eng.close()  # the server process owns the engine: nothing of it stays open here
        yield from _server_process(db_path, token, store)


def _in_process(eng: Engine, token: str, store: Any) -> Iterator[Any]:
    from app_support import InProcessApp, InProcessRemoteEngine

    app = InProcessApp(eng).start()
    remote = InProcessRemoteEngine(app, token)
    remote.store = store  # type: ignore[attr-defined]
    try:
        yield remote
    finally:
        remote.close()
        try:
            app.stop()
        finally:
            eng.close()


def _server_process(db: Path, token: str, store: Any) -> Iterator[Any]:
    from server_support import shared_launcher

    from clearance.remote import RemoteEngine

    launcher = shared_launcher()
    handle, url = launcher.start(db)
    remote = RemoteEngine(url, token)
    remote.store = store  # type: ignore[attr-defined]
    try:
        yield remote
    finally:
        remote.close()
        launcher.stop(handle)


# --------------------------------------------------------------------------- the server on loopback


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """The app served by uvicorn in a thread on a free loopback port, over ``server.db`` (RULES),
    with one key per role (server_support.KEYS)."""
    from clearance.server import ServerThread

    db = tmp_path / "server.db"
    engine = Engine(db)
    engine.apply_rules(parse_rules(RULES))
    tokens = make_keys(engine)
    server = ServerThread(engine).start()
    result = Live(server.url, db, tokens)
    yield result
    result.close()
    server.stop()


# --------------------------------------------------------------------------- PostgreSQL

PG_HOST, PG_PORT = "127.0.0.1", 5432


def _postgres_unavailable() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'clearance[postgres]')"
    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=1).close()
    except OSError as exc:
        return f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({exc})"
    return None


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server at 127.0.0.1:5432 (user postgres, trust), dropped
    after the module. Without psycopg or the server the module's tests skip, except under CI
    (``CI`` set), where they fail."""
    reason = _postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    from sqlalchemy import create_engine, text

    name = f"clearance_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
