"""One JSON error envelope for every refusal, and the map from clearance's errors to HTTP.

Every response with a status of 400 or above has this body::

    {"error": {"type": "not_found", "message": "unknown approval id 'apr_1'",
               "status": 404, "field": null, "correlation_id": "c0ffee..."}}

``type`` is stable and machine-readable (:data:`ERROR_TYPES` lists the clearance ones; the
others are ``validation_error``, ``unauthorized``, ``forbidden``, ``payload_too_large``,
``not_found``, ``method_not_allowed``, ``idempotency_key_reused``, ``idempotency_in_progress``,
``unavailable`` and ``internal_error``); ``field`` names the offending field of a request
(``body.value``, ``query.limit``) when there is one; ``correlation_id`` is echoed in the
``X-Correlation-Id`` header and in the server's logs. No stack trace is ever sent.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clearance import errors as E

__all__ = ["ERROR_TYPES", "STORE_UNAVAILABLE", "ApiError", "ErrorBody", "ErrorEnvelope", "envelope", "error_type", "install", "validation_message"]

log = logging.getLogger("clearance.server")


class ErrorBody(BaseModel):
    type: str
    message: str
    status: int
    field: str | None = None
    correlation_id: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


#: clearance exception -> (HTTP status, envelope type). Most specific first; the remote engine
#: maps ``type`` back to the same class.
ERROR_TYPES: list[tuple[type[Exception], int, str]] = [
    (E.UnknownRequest, 404, "unknown_request"),
    (E.NotFound, 404, "not_found"),
    (E.ApprovalExpired, 409, "approval_expired"),
    (E.ApprovalNotPending, 409, "approval_not_pending"),
    (E.DuplicateVote, 409, "duplicate_vote"),
    (E.AlreadyClaimed, 409, "already_claimed"),
    (E.PolicyBlocks, 409, "policy_blocks"),
    (E.NotApproved, 409, "not_approved"),
    (E.ArgumentsMismatch, 409, "arguments_mismatch"),
    (E.IllegalTransition, 409, "illegal_transition"),
    (E.RunStateTampered, 409, "run_state_tampered"),
    (E.RunBusy, 409, "run_busy"),
    (E.ConflictError, 409, "conflict"),
    (E.NotYours, 403, "not_yours"),
    (E.RuleError, 422, "rule_error"),
    (E.AnchorError, 409, "anchor_error"),
    (E.ClearanceError, 400, "refused"),
]


#: What the database going away looks like: it cannot be reached (``OperationalError``), the
#: driver's connection is closed (``InterfaceError``), or it broke inside a transaction, which
#: SQLAlchemy then refuses to commit (``PendingRollbackError``). Each is a 503: nothing was
#: recorded, so nothing may run; the pool reconnects by itself once the database is back.
STORE_UNAVAILABLE = (OperationalError, InterfaceError, PendingRollbackError)
STORE_UNAVAILABLE_MESSAGE = "the store is unavailable; nothing was recorded: retry later"


class ApiError(Exception):
    """A refusal raised by the server layer itself (auth, idempotency, limits)."""

    def __init__(self, status: int, type: str, message: str, field: str | None = None,
                 retry_after: int | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type, message, field
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None


def error_type(exc: BaseException) -> tuple[int, str]:
    for cls, status, name in ERROR_TYPES:
        if isinstance(exc, cls):
            return status, name
    return 500, "internal_error"


def _correlation(request: Request) -> str | None:
    return getattr(request.state, "correlation_id", None)


def envelope(status: int, type: str, message: str, *, field: str | None = None, correlation_id: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = ErrorBody(type=type, message=message, status=status, field=field, correlation_id=correlation_id)
    hdrs = dict(headers or {})
    if correlation_id:
        hdrs["X-Correlation-Id"] = correlation_id
    return JSONResponse({"error": body.model_dump()}, status_code=status, headers=hdrs)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if loc else "body"


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    if not errors:
        return "the request is not valid", None
    parts = []
    for err in errors[:5]:
        where = _loc(err.get("loc"))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "json_invalid":
            where, msg = "body", f"not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        parts.append(f"{where}: {msg}")
    first = errors[0]
    field = "body" if first.get("type") == "json_invalid" else _loc(first.get("loc"))
    return "; ".join(parts), field


_STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 406: "not_acceptable", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                 422: "validation_error", 429: "too_many_requests", 503: "unavailable"}  # fmt: skip


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the envelope."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.type, exc.message, field=exc.field, correlation_id=_correlation(request),
                        headers=exc.headers)  # fmt: skip

    @app.exception_handler(E.ClearanceError)
    async def _clearance(request: Request, exc: E.ClearanceError) -> JSONResponse:
        status, name = error_type(exc)
        return envelope(status, name, str(exc), correlation_id=_correlation(request))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = validation_message(list(exc.errors()))
        return envelope(422, "validation_error", message, field=field, correlation_id=_correlation(request))

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError) -> JSONResponse:
        message, field = validation_message(list(exc.errors()))
        return envelope(422, "validation_error", message, field=field and f"body.{field}", correlation_id=_correlation(request))

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        return envelope(422, "validation_error", str(exc) or "invalid value", correlation_id=_correlation(request))

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        return envelope(422, "validation_error", "a number in the request is out of range", correlation_id=_correlation(request))

    @app.exception_handler(RecursionError)
    async def _recursion(request: Request, exc: RecursionError) -> JSONResponse:
        return envelope(422, "validation_error", "the request is nested too deeply", correlation_id=_correlation(request))

    async def _store(request: Request, exc: Exception) -> JSONResponse:
        log.warning("store unavailable: %s", getattr(exc, "orig", None) or exc)
        return envelope(503, "unavailable", STORE_UNAVAILABLE_MESSAGE, correlation_id=_correlation(request),
                        headers={"Retry-After": "1"})  # fmt: skip

    for cls in STORE_UNAVAILABLE:
        app.add_exception_handler(cls, _store)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _STATUS_TYPES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else name.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return envelope(exc.status_code, name, message, correlation_id=_correlation(request),
                        headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error (correlation id %s)", _correlation(request))
        return envelope(500, "internal_error", "internal error; the server log has the details",
                        correlation_id=_correlation(request))  # fmt: skip
