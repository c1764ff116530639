"""The engine's contract, declared once (clearance.engine.contract): every facade offers every
operation with the protocol's signature, and the server answers each one where the table says,
to the roles it names."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from clearance import AsyncEngine, Engine
from clearance.engine.contract import OPERATIONS, AsyncEngineAPI, EngineAPI
from clearance.remote import AsyncRemoteEngine, RemoteEngine

FACADES = [(Engine, EngineAPI), (RemoteEngine, EngineAPI), (AsyncEngine, AsyncEngineAPI), (AsyncRemoteEngine, AsyncEngineAPI)]


def members(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")}


def shape(fn: object) -> list[tuple[str, object, object]]:
    """Parameters as callers see them: names, kinds and defaults."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]  # type: ignore[arg-type]


def test_the_table_and_both_protocols_name_the_same_operations() -> None:
    assert members(EngineAPI) == members(AsyncEngineAPI) == set(OPERATIONS)
    for name in OPERATIONS:
        assert shape(getattr(EngineAPI, name)) == shape(getattr(AsyncEngineAPI, name)), name
        assert inspect.iscoroutinefunction(getattr(AsyncEngineAPI, name)), name
        assert not inspect.iscoroutinefunction(getattr(EngineAPI, name)), name


@pytest.mark.parametrize(("facade", "protocol"), FACADES, ids=lambda c: getattr(c, "__name__", ""))
def test_every_facade_offers_every_operation_with_its_signature(facade: type, protocol: type) -> None:
    for name in OPERATIONS:
        implementation = getattr(facade, name, None)
        assert implementation is not None, f"{facade.__name__} lacks {name}"
        assert implementation is not getattr(protocol, name), f"{facade.__name__}.{name} is the protocol's empty body"
        assert shape(implementation) == shape(getattr(protocol, name)), f"{facade.__name__}.{name} drifted"
        assert inspect.iscoroutinefunction(implementation) == (protocol is AsyncEngineAPI), name


def test_a_drifted_signature_is_caught() -> None:
    """The check above can fail: a facade whose method lost a keyword is told apart."""

    class Drifted(Engine):
        def list_approvals(self, status=None):  # type: ignore[no-untyped-def,override]
            return []

    assert shape(Drifted.list_approvals) != shape(EngineAPI.list_approvals)


def test_the_server_answers_every_operation_where_the_table_says(tmp_path: Path) -> None:
    from fastapi.routing import APIRoute

    from clearance.server import create_app
    from clearance.server.app import ROUTERS

    paths = create_app(Engine(tmp_path / "c.db"), close_engine=True).openapi()["paths"]
    routes = {(m, "/v1" + r.path): r for module in ROUTERS for r in module.router.routes if isinstance(r, APIRoute)
              for m in r.methods}  # fmt: skip
    for op in OPERATIONS.values():
        assert op.method.lower() in paths.get(op.path, {}), f"the API has no {op.method} {op.path} for {op.name}"
        guards = [d.call.__name__ for d in routes[(op.method, op.path)].dependant.dependencies
                  if getattr(d.call, "__name__", "").startswith("require_")]  # fmt: skip
        assert guards == ["require_" + "_".join(sorted({*op.roles, "admin"}))], (op.name, guards)


def test_only_the_engine_touches_the_store() -> None:
    """The faces above the engine (server, CLI, adapters, step, remote) import nothing from the store."""
    import ast

    import clearance

    root = Path(clearance.__file__).parent
    faces = [p for p in root.rglob("*.py") if p.relative_to(root).parts[0] not in ("store", "engine", "memory", "policy")]
    offenders = []
    for path in faces:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n == "clearance.store" or n.startswith("clearance.store.")]
    assert [p for p in faces if p.parts[-2] == "server"], "the server's modules were looked at"
    assert offenders == []
