"""Rules: read, apply, edit one rule, pause/resume, validate, versions, dry runs.

Each single-rule edit is one engine operation (``Engine.edit_rule``): read, change and apply in
one transaction, so edits made at once through any number of server processes never lose one
another.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import Field

from clearance.engine import PolicyInfo
from clearance.engine.backtest import BacktestReport
from clearance.engine.evidence import Promotion, RuleEvidence
from clearance.errors import NotFound, RuleError
from clearance.policy import Rule, RuleFile, RuleSet, parse_rules
from clearance.server import schemas as S
from clearance.server.auth import Principal, require
from clearance.server.deps import engine_of
from clearance.server.errors import ApiError

router = APIRouter(tags=["rules"])

Reader = Annotated[Principal, Depends(require("approver"))]
Admin = Annotated[Principal, Depends(require())]
RuleId = Annotated[str, Path(min_length=1, max_length=128)]

_MAX_INT = 2**53
_MAX_SECONDS = 10 * 365 * 86400.0


def _document(ruleset: RuleSet) -> S.RulesDocument:
    doc = ruleset.source.model_dump(mode="json", exclude_none=True)
    return S.RulesDocument(policy_version=ruleset.policy_version, version=doc.get("version", 1), rules=doc["rules"],
                           rule_versions={r.id: r.version for r in ruleset.rules})  # fmt: skip


def _check_bounds(source: RuleFile, at: str = "body.rules.{i}.") -> None:
    """Refuse numbers the store or the clock cannot hold, before they are applied."""
    for i, rule in enumerate(source.rules):
        for name in ("max_per_hour", "max_per_day"):
            value = getattr(rule, name)
            if value is not None and value > _MAX_INT:
                raise ApiError(422, "rule_error", f"rule {rule.id!r}: {name} is too large", field=at.format(i=i) + name)
        if rule.cooldown_seconds is not None and rule.cooldown_seconds > _MAX_SECONDS:
            raise ApiError(422, "rule_error", f"rule {rule.id!r}: cooldown_seconds is longer than ten years",
                           field=at.format(i=i) + "cooldown_seconds")  # fmt: skip
        if rule.approval_ttl is not None and rule.approval_ttl > timedelta(seconds=_MAX_SECONDS):
            raise ApiError(422, "rule_error", f"rule {rule.id!r}: approval_ttl is longer than ten years",
                           field=at.format(i=i) + "approval_ttl")  # fmt: skip


def _source(body: S.ApplyRulesRequest) -> RuleFile:
    if (body.document is None) == (body.yaml is None):
        raise ApiError(422, "validation_error", "give exactly one of document or yaml", field="body")
    source = body.document if body.document is not None else parse_rules(body.yaml or "", origin="yaml")
    RuleSet.compile(source, "check")  # CEL conditions, time zones
    _check_bounds(source)
    return source


def _apply(request: Request, principal: Principal, source: RuleFile) -> PolicyInfo:
    return engine_of(request).apply_rules(source, applied_by=principal.identity)


@router.get("/rules", response_model=S.RulesDocument, summary="The rules in force")
def get_rules(request: Request, principal: Reader) -> S.RulesDocument:
    return _document(engine_of(request).current_rules())


@router.put("/rules", response_model=PolicyInfo,
            summary="Make a whole rules document the policy (a new version when anything changed)")  # fmt: skip
def apply_rules(body: S.ApplyRulesRequest, request: Request, principal: Admin) -> PolicyInfo:
    return _apply(request, principal, _source(body))


@router.post("/rules/validate", response_model=S.ValidateResponse, summary="Check a rules document without applying it")
def validate(body: S.ApplyRulesRequest, request: Request, principal: Reader) -> S.ValidateResponse:
    try:
        source = _source(body)
    except RuleError as exc:
        return S.ValidateResponse(valid=False, error=str(exc))
    except ApiError as exc:
        if exc.type != "rule_error":
            raise
        return S.ValidateResponse(valid=False, error=exc.message)
    return S.ValidateResponse(valid=True, rules=[r.id for r in source.rules])


@router.get("/rules/versions", response_model=list[S.PolicyVersion], summary="Every applied policy version")
def versions(request: Request, principal: Reader) -> list[S.PolicyVersion]:
    return [S.PolicyVersion(**row) for row in engine_of(request).policy_versions()]


@router.get("/rules/versions/{version}", response_model=S.RulesDocument, summary="The rules of one policy version")
def get_version(version: Annotated[int, Path(ge=1, le=_MAX_INT)], request: Request, principal: Reader) -> S.RulesDocument:
    return _document(engine_of(request).rules_at(version))


@router.post("/rules/dry-run", response_model=S.DryRunResponse,
             summary="What the rules (in force, or given) would decide for these actions; nothing is recorded")  # fmt: skip
def dry_run(body: S.DryRunRequest, request: Request, principal: Reader) -> S.DryRunResponse:
    if body.document is not None:
        _check_bounds(body.document)
    version, verdicts = engine_of(request).dry_run(body.actions, rules=body.document)
    return S.DryRunResponse(policy_version=version, verdicts=[
        S.DryRunVerdict(result=v.result.value, reason=v.reason, matched_rules=[m.model_dump(mode="json") for m in v.matched],
                        shadow_rules=[m.model_dump(mode="json") for m in v.shadow]) for v in verdicts])  # fmt: skip


def _zoned(since: datetime | None, field: str) -> None:
    if since is not None and since.tzinfo is None:
        raise ApiError(422, "validation_error", "since needs a time zone (e.g. 2026-01-01T00:00:00Z)", field=field)


class BacktestRequest(S.ApplyRulesRequest):
    """The candidate rules (``document`` or ``yaml``) and where the replayed history starts."""

    since: datetime | None = Field(default=None, description="Replay the decisions made since then (default: all).")


@router.post("/rules/backtest", response_model=BacktestReport,
             summary="What candidate rules would have done to the recorded decisions; nothing is written")  # fmt: skip
def backtest(body: BacktestRequest, request: Request, principal: Reader) -> BacktestReport:
    _zoned(body.since, "body.since")
    return engine_of(request).backtest(_source(body), since=body.since)


@router.get("/rules/{rule_id}/evidence", response_model=RuleEvidence,
            summary="A rule's recorded would-have-fired calls joined with their outcomes")  # fmt: skip
def evidence(rule_id: RuleId, request: Request, principal: Reader, since: datetime | None = None) -> RuleEvidence:
    _zoned(since, "query.since")
    return engine_of(request).rule_evidence(rule_id, since=since)


class PromoteRequest(S._In):
    force: bool = Field(default=False, description="Promote even without evidence.")
    min_outcomes: int = Field(default=1, ge=1, le=1_000_000, description="Calls with outcomes needed as evidence.")


@router.post("/rules/{rule_id}/promote", response_model=Promotion,
             summary="Turn a shadow rule on, with its evidence (refused without evidence unless forced)")  # fmt: skip
def promote(rule_id: RuleId, request: Request, principal: Admin, body: PromoteRequest | None = None) -> Promotion:
    body = body or PromoteRequest()
    return engine_of(request).promote_rule(rule_id, force=body.force, min_outcomes=body.min_outcomes,
                                           applied_by=principal.identity)  # fmt: skip


def _current(request: Request) -> RuleSet:
    return engine_of(request).current_rules()


@router.get("/rules/{rule_id}", response_model=S.RuleView, summary="One rule in force")
def get_rule(rule_id: RuleId, request: Request, principal: Reader) -> S.RuleView:
    ruleset = _current(request)
    for r in ruleset.rules:
        if r.id == rule_id:
            return S.RuleView(rule=r.rule.model_dump(mode="json", exclude_none=True), rule_version=r.version,
                              policy_version=ruleset.policy_version)  # fmt: skip
    raise NotFound(f"no rule {rule_id!r} in policy version {ruleset.policy_version}")


def _edit(request: Request, principal: Principal, change: Any, rule_id: str, rule: Rule | None = None) -> PolicyInfo:
    if rule is not None:
        _check_bounds(RuleFile(rules=[rule]), at="body.")
    return engine_of(request).edit_rule(change, rule_id, rule, applied_by=principal.identity)


@router.post("/rules", response_model=PolicyInfo, summary="Add one rule (a new policy version)")
def create_rule(rule: Rule, request: Request, principal: Admin) -> PolicyInfo:
    return _edit(request, principal, "add", rule.id, rule)


@router.put("/rules/{rule_id}", response_model=PolicyInfo, summary="Replace one rule (a new policy version)")
def update_rule(rule_id: RuleId, rule: Rule, request: Request, principal: Admin) -> PolicyInfo:
    if rule.id != rule_id:
        raise ApiError(422, "validation_error", f"the body's id {rule.id!r} differs from {rule_id!r} in the path",
                       field="body.id")  # fmt: skip
    return _edit(request, principal, "replace", rule_id, rule)


@router.delete("/rules/{rule_id}", response_model=PolicyInfo, summary="Remove one rule (a new policy version)")
def delete_rule(rule_id: RuleId, request: Request, principal: Admin) -> PolicyInfo:
    return _edit(request, principal, "remove", rule_id)


@router.post("/rules/{rule_id}/pause", response_model=PolicyInfo, summary="Pause one rule (ignored until resumed)")
def pause(rule_id: RuleId, request: Request, principal: Admin) -> PolicyInfo:
    return _edit(request, principal, "pause", rule_id)


@router.post("/rules/{rule_id}/resume", response_model=PolicyInfo, summary="Make a paused rule active again")
def resume(rule_id: RuleId, request: Request, principal: Admin) -> PolicyInfo:
    return _edit(request, principal, "resume", rule_id)
