"""The operations the server answers exactly as the engine does (no arguments, nothing about the
caller but its role): registered from the contract's table, with its path, method, roles and
return type, so they cannot drift from ``RemoteEngine``."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from clearance.engine.contract import OPERATIONS, EngineAPI, returns
from clearance.server.auth import Principal, require
from clearance.server.deps import engine_of

router = APIRouter()

#: Operation -> its OpenAPI tag.
PLAIN = {"kill_switches": "kill switch", "expire_approvals": "approvals", "learning_report": "audit",
         "checkpoint_audit": "audit"}  # fmt: skip


def _register(name: str, tag: str) -> None:
    op = OPERATIONS[name]

    def endpoint(request: Request, principal: Principal) -> Any:
        return getattr(engine_of(request), name)()

    caller = Annotated[Principal, Depends(require(*op.roles))]
    endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter("principal", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=caller),
    ])  # fmt: skip
    summary = (inspect.getdoc(getattr(EngineAPI, name)) or name).split("\n")[0].rstrip(".")
    router.add_api_route(op.path.removeprefix("/v1"), endpoint, methods=[op.method], response_model=returns(name),
                         summary=summary, name=name, tags=[tag])  # fmt: skip


for _name, _tag in PLAIN.items():
    _register(_name, _tag)
