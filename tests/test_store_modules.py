"""The store's modules: no import cycle among them, and nothing POSIX-only needed to use them."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import clearance
import clearance.store
from clearance import Engine

STORE = Path(clearance.store.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(STORE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The store modules that ``path`` imports, anywhere in it (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # ``from package import module`` or a name
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
    return found & modules


def test_the_store_and_migration_modules_import_no_cycle() -> None:
    paths = [p for p in STORE.rglob("*.py") if "versions" not in p.parts]
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    assert "clearance.store.migrations.env" in graph and "clearance.store.writers" in graph

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        for dep in graph[name]:
            visit(dep, (*path, name))

    for name in graph:
        visit(name, ())


CHILD = """
import json, sys, threading
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
import clearance
from clearance import Engine
from clearance.store import WouldBlock

engine = Engine(sys.argv[1])
assert engine.store._writers is not None and engine.store._writers._fcntl is None
decision = engine.evaluate({"tool": "send_email", "actor": "a"})
execution = engine.record_execution(decision.request_id, "executed")
threads = [threading.Thread(target=lambda: [engine.evaluate({"tool": "t"}) for _ in range(10)]) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
def try_to_write():
    try:
        with engine.store.write(blocking=False):
            return False
    except WouldBlock:
        return True
with engine.store.batch(sync=False):  # deferred commit on the kept connection; threads still queue
    engine.evaluate({"tool": "t"})
    blocked = []
    other = threading.Thread(target=lambda: blocked.append(try_to_write()))
    other.start()
    other.join()
engine.store.sync()
assert engine.verify_audit().ok
engine.close()
print(json.dumps({"request_id": decision.request_id, "status": str(execution.status.value), "blocked": blocked}))
"""


def test_the_engine_works_where_there_is_no_fcntl(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    env = {**os.environ, "PYTHONPATH": str(Path(clearance.__file__).parent.parent)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["status"] == "executed" and out["blocked"] == [True]
    with Engine(db) as engine:  # and what it wrote is there for a process that has fcntl
        assert engine.get_execution(out["request_id"]).status.value == "executed"
        assert engine.verify_audit().ok
