"""Rules: read, apply, edit one rule, pause/resume, validate, versions, dry runs.

The engine applies whole documents; single-rule edits here read the rules in force, change
one rule and apply the result as a new policy version (under a lock, so two edits made
through this server never lose each other).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from clearance.errors import NotFound, RuleError
from clearance.model import Action, DecisionResult, KillSwitch, utcnow
from clearance.policy import Rule, RuleFile, RuleSet, Verdict, evaluate, parse_rules
from clearance.server import schemas as S
from clearance.server.auth import Principal, require
from clearance.server.deps import engine_of
from clearance.server.errors import ApiError

router = APIRouter(tags=["rules"])

Reader = Annotated[Principal, Depends(require("approver"))]
Admin = Annotated[Principal, Depends(require())]
RuleId = Annotated[str, Path(min_length=1, max_length=128)]

_EDIT = threading.Lock()
_MAX_INT = 2**53
_MAX_SECONDS = 10 * 365 * 86400.0


def _document(ruleset: RuleSet) -> S.RulesDocument:
    doc = ruleset.source.model_dump(mode="json", exclude_none=True)
    return S.RulesDocument(policy_version=ruleset.policy_version, version=doc.get("version", 1), rules=doc["rules"],
                           rule_versions={r.id: r.version for r in ruleset.rules})  # fmt: skip


def _check_bounds(source: RuleFile) -> None:
    """Refuse numbers the store or the clock cannot hold, before they are applied."""
    for i, rule in enumerate(source.rules):
        for name in ("max_per_hour", "max_per_day"):
            value = getattr(rule, name)
            if value is not None and value > _MAX_INT:
                raise ApiError(422, "rule_error", f"rule {rule.id!r}: {name} is too large", field=f"body.rules.{i}.{name}")
        if rule.cooldown_seconds is not None and rule.cooldown_seconds > _MAX_SECONDS:
            raise ApiError(422, "rule_error", f"rule {rule.id!r}: cooldown_seconds is longer than ten years",
                           field=f"body.rules.{i}.cooldown_seconds")  # fmt: skip
        if rule.approval_ttl is not None and rule.approval_ttl > timedelta(seconds=_MAX_SECONDS):
            raise ApiError(422, "rule_error", f"rule {rule.id!r}: approval_ttl is longer than ten years",
                           field=f"body.rules.{i}.approval_ttl")  # fmt: skip


def _source(body: S.ApplyRulesRequest) -> RuleFile:
    if (body.document is None) == (body.yaml is None):
        raise ApiError(422, "validation_error", "give exactly one of document or yaml", field="body")
    source = body.document if body.document is not None else parse_rules(body.yaml or "", origin="yaml")
    RuleSet.compile(source, "check")  # CEL conditions, time zones
    _check_bounds(source)
    return source


def _apply(request: Request, principal: Principal, source: RuleFile) -> S.PolicyInfoResponse:
    info = engine_of(request).apply_rules(source, applied_by=principal.identity)
    return S.PolicyInfoResponse(**info.__dict__)


@router.get("/rules", response_model=S.RulesDocument, summary="The rules in force")
def get_rules(request: Request, principal: Reader) -> S.RulesDocument:
    return _document(engine_of(request).current_rules())


@router.put("/rules", response_model=S.PolicyInfoResponse,
            summary="Make a whole rules document the policy (a new version when anything changed)")  # fmt: skip
def apply_rules(body: S.ApplyRulesRequest, request: Request, principal: Admin) -> S.PolicyInfoResponse:
    source = _source(body)
    with _EDIT:
        return _apply(request, principal, source)


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
    engine = engine_of(request)
    with engine.store.read() as tx:
        row = tx.get_policy(version)
    if row is None:
        raise NotFound(f"no policy version {version}")
    source = RuleFile.model_validate(row["document"])
    return _document(RuleSet.compile(source, str(version), row["rule_versions"]))


class _Usage:
    """The store's counters at one instant, read only (as the engine's own view does)."""

    def __init__(self, tx: Any, now: datetime) -> None:
        self.tx, self.now = tx, now

    def count(self, rule_id: str, actor: str, since: datetime, cap: int | None = None) -> int:
        return int(self.tx.count(rule_id, actor, since, self.now, cap))

    def total_value(self, rule_id: str, actor: str, since: datetime) -> float:
        return float(self.tx.total_value(rule_id, actor, since, self.now))

    def last_at(self, rule_id: str, actor: str, target: str | None) -> datetime | None:
        return self.tx.last_at(rule_id, actor, target, self.now)  # type: ignore[no-any-return]


def _switch_for(switches: list[KillSwitch], action: Action) -> KillSwitch | None:
    for s in switches:
        if s.scope == "all" or (s.scope == "domain" and s.value == action.domain) or (
                s.scope == "tool" and s.value == action.tool) or (s.scope == "actor" and s.value == action.actor):  # fmt: skip
            return s
    return None


@router.post("/rules/dry-run", response_model=S.DryRunResponse,
             summary="What the rules (in force, or given) would decide for these actions; nothing is recorded")  # fmt: skip
def dry_run(body: S.DryRunRequest, request: Request, principal: Reader) -> S.DryRunResponse:
    engine = engine_of(request)
    if body.document is not None:
        _check_bounds(body.document)
        ruleset = RuleSet.compile(body.document, "dry-run")
    else:
        ruleset = engine.current_rules()
    switches = engine.kill_switches()
    now = utcnow()
    verdicts = []
    with engine.store.read() as tx:
        for action in body.actions:
            switch = _switch_for(switches, action)
            if switch is not None:
                verdict = Verdict(DecisionResult.blocked, f"kill switch is active for {switch.scope} {switch.value}".strip())
            else:
                verdict = evaluate(ruleset, action, now, _Usage(tx, now))
            verdicts.append(S.DryRunVerdict(result=verdict.result.value, reason=verdict.reason,
                                            matched_rules=[m.model_dump(mode="json") for m in verdict.matched],
                                            shadow_rules=[m.model_dump(mode="json") for m in verdict.shadow]))  # fmt: skip
    return S.DryRunResponse(policy_version=ruleset.policy_version, verdicts=verdicts)


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


def _edit(request: Request, principal: Principal, rule_id: str | None, change: Any) -> S.PolicyInfoResponse:
    with _EDIT:
        rules = list(_current(request).source.rules)
        rules = change(rules)
        source = RuleFile(rules=rules)
        RuleSet.compile(source, "check")
        _check_bounds(source)
        return _apply(request, principal, source)


def _index(rules: list[Rule], rule_id: str) -> int:
    for i, r in enumerate(rules):
        if r.id == rule_id:
            return i
    raise NotFound(f"no rule {rule_id!r} in the rules in force")


@router.post("/rules", response_model=S.PolicyInfoResponse, summary="Add one rule (a new policy version)")
def create_rule(rule: Rule, request: Request, principal: Admin) -> S.PolicyInfoResponse:
    def change(rules: list[Rule]) -> list[Rule]:
        if any(r.id == rule.id for r in rules):
            from clearance.errors import ConflictError

            raise ConflictError(f"rule {rule.id!r} exists already; update it with PUT /v1/rules/{rule.id}")
        return [*rules, rule]

    return _edit(request, principal, rule.id, change)


@router.put("/rules/{rule_id}", response_model=S.PolicyInfoResponse, summary="Replace one rule (a new policy version)")
def update_rule(rule_id: RuleId, rule: Rule, request: Request, principal: Admin) -> S.PolicyInfoResponse:
    if rule.id != rule_id:
        raise ApiError(422, "validation_error", f"the body's id {rule.id!r} differs from {rule_id!r} in the path",
                       field="body.id")  # fmt: skip

    def change(rules: list[Rule]) -> list[Rule]:
        rules[_index(rules, rule_id)] = rule
        return rules

    return _edit(request, principal, rule_id, change)


@router.delete("/rules/{rule_id}", response_model=S.PolicyInfoResponse, summary="Remove one rule (a new policy version)")
def delete_rule(rule_id: RuleId, request: Request, principal: Admin) -> S.PolicyInfoResponse:
    def change(rules: list[Rule]) -> list[Rule]:
        del rules[_index(rules, rule_id)]
        return rules

    return _edit(request, principal, rule_id, change)


def _set_status(request: Request, principal: Principal, rule_id: str, status: str) -> S.PolicyInfoResponse:
    def change(rules: list[Rule]) -> list[Rule]:
        i = _index(rules, rule_id)
        rules[i] = rules[i].model_copy(update={"status": status})
        return rules

    return _edit(request, principal, rule_id, change)


@router.post("/rules/{rule_id}/pause", response_model=S.PolicyInfoResponse, summary="Pause one rule (ignored until resumed)")
def pause(rule_id: RuleId, request: Request, principal: Admin) -> S.PolicyInfoResponse:
    return _set_status(request, principal, rule_id, "paused")


@router.post("/rules/{rule_id}/resume", response_model=S.PolicyInfoResponse, summary="Make a paused rule active again")
def resume(rule_id: RuleId, request: Request, principal: Admin) -> S.PolicyInfoResponse:
    return _set_status(request, principal, rule_id, "active")
