"""Rules: the rules in force, every policy version with its diff from the one before, pause and
resume (admins), how often each shadow rule would have fired, and a dry run of an edited rule
set against actions typed in (nothing is recorded)."""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from clearance.errors import ClearanceError
from clearance.policy import RuleSet, parse_rules
from clearance.server.dashboard.render import flash, redirect, render
from clearance.server.dashboard.session import Viewer, engine_of, form_text, page

#: Policy versions shown with their diffs, newest first.
VERSIONS = 10
#: Decisions looked at for each shadow rule's count.
SHADOW_SCAN = 1000

EXAMPLE_ACTIONS = '[{"tool": "refund_payment", "domain": "customer_transactions", "actor": "agent-7", "value": 700}]'


def _yaml(ruleset: RuleSet) -> str:
    return yaml.safe_dump(ruleset.source.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


def _versions(request: Request) -> list[dict[str, Any]]:
    engine = engine_of(request)
    rows = engine.policy_versions()[-VERSIONS:]
    out = []
    for row in reversed(rows):
        version = row["version"]
        new = _yaml(engine.rules_at(version)).splitlines()
        old = _yaml(engine.rules_at(version - 1)).splitlines() if version > 1 else []
        diff = list(difflib.unified_diff(old, new, f"version {version - 1}", f"version {version}", lineterm="", n=2))
        out.append({**row, "diff": diff})
    return out


def _page(request: Request, viewer: Viewer, *, draft: str | None = None, actions: str | None = None,
          dry: dict[str, Any] | None = None, status: int = 200) -> Response:  # fmt: skip
    engine = engine_of(request)
    current = engine.current_rules()
    shadow = {r.id: len(engine.list_decisions(rule=r.id, limit=SHADOW_SCAN)) for r in current.rules if r.rule.status == "shadow"}
    return render(request, viewer, "rules.html", status=status, current=current, versions=_versions(request),
                  shadow=shadow, shadow_scan=SHADOW_SCAN, draft=draft if draft is not None else _yaml(current),
                  actions=actions or EXAMPLE_ACTIONS, dry=dry, active="rules")  # fmt: skip


def rules(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    return _page(request, viewer)


def edit(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """Pause or resume one rule (a new policy version)."""
    rule_id, change = request.path_params["rule_id"], request.path_params["change"]
    if change not in ("pause", "resume"):
        return render(request, viewer, "missing.html", status=404, what=f"{change} for a rule")
    try:
        info = engine_of(request).edit_rule(change, rule_id, applied_by=viewer.identity)
    except (ClearanceError, ValueError) as exc:
        flash(request, str(exc), "error")
    else:
        flash(request, f"Rule {rule_id} {'paused' if change == 'pause' else 'resumed'}: policy version {info.version}.")
    return redirect("/rules")


def dry_run(request: Request, viewer: Viewer, form: FormData | None) -> Response:
    draft = form_text(form, "rules", 200_000) or ""
    actions_text = form_text(form, "actions", 200_000) or "[]"
    try:
        source = parse_rules(draft, origin="the edited rules")
        actions = json.loads(actions_text)
        if isinstance(actions, dict):
            actions = [actions]
        if not isinstance(actions, list) or not actions or len(actions) > 100:
            raise ValueError("actions: give a JSON list of 1 to 100 actions")
        version, verdicts = engine_of(request).dry_run(actions, rules=source)
    except json.JSONDecodeError as exc:
        dry = {"error": f"actions: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"}
    except ValidationError as exc:
        first = exc.errors()[0]
        dry = {"error": f"actions: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"}
    except (ClearanceError, ValueError) as exc:
        dry = {"error": str(exc)}
    else:
        dry = {"rows": list(zip(actions, verdicts))}
    return _page(request, viewer, draft=draft, actions=actions_text, dry=dry, status=422 if "error" in dry else 200)


ROUTES = [
    ("/rules", page(rules), ["GET"]),
    ("/rules/dry-run", page(dry_run), ["POST"]),
    ("/rules/{rule_id}/{change:str}", page(edit, needs="apply_rules"), ["POST"]),
]
