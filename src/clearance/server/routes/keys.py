"""API keys (admin only), and ``whoami`` for any key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from clearance.errors import NotFound
from clearance.server import schemas as S
from clearance.server.auth import Keys, Principal, require

router = APIRouter(tags=["keys"])

Admin = Annotated[Principal, Depends(require())]
Anyone = Annotated[Principal, Depends(require("agent", "approver"))]
KeyId = Annotated[str, Path(min_length=1, max_length=32)]


def _keys(request: Request) -> Keys:
    return request.app.state.keys  # type: ignore[no-any-return]


@router.get("/whoami", response_model=Principal, summary="The key this request was made with")
def whoami(principal: Anyone) -> Principal:
    return principal


@router.get("/keys", response_model=list[S.KeyView], summary="API keys (never their secrets)")
def list_keys(request: Request, principal: Admin,
              include_revoked: Annotated[bool, Query()] = False) -> list[S.KeyView]:  # fmt: skip
    return [S.KeyView(**k.__dict__) for k in _keys(request).list(include_revoked=include_revoked)]


@router.post("/keys", response_model=S.CreatedKey, summary="Create a key; its token is in this answer only")
def create_key(body: S.CreateKeyRequest, request: Request, principal: Admin) -> S.CreatedKey:
    key, token = _keys(request).create(body.name, body.role, identity=body.identity, created_by=principal.identity)
    return S.CreatedKey(**key.__dict__, token=token)


@router.post("/keys/{key_id}/revoke", response_model=S.KeyView, summary="Revoke a key (effective within a second)")
def revoke_key(key_id: KeyId, request: Request, principal: Admin) -> S.KeyView:
    keys = _keys(request)
    keys.revoke(key_id, by=principal.identity)
    key = keys.get(key_id)
    if key is None:
        raise NotFound(f"no API key {key_id!r}")
    return S.KeyView(**key.__dict__)
