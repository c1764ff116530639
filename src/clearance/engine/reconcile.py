"""The state tables checked against the audit chain.

The engine acts on its tables (a decision row says whether a call may run, an approvals row
what the approver is shown and whether it was approved, the policies what the rules are, an API
key's row what role it has, a kill switch's row that calls stop), but the chain is the record. A row
edited in the database, or inserted without its event, is a row the chain does not vouch for:
``claim_execution`` already refuses to act on one; :class:`Reconciler` finds every such row.

It is fed each event of the chain once, in order (riding on :func:`audit.verify`'s reading),
and keeps, per decision, approval, execution, outcome, policy version, API key and kill switch,
what the events say its row must hold (large values as digests); then it reads each table once
and compares. Not covered: an API key's secret hash (the chain never holds it), votes, usage
counters, and runs (checked by their digest when resumed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from clearance.model import canonical_json
from clearance.store import SqlTx

__all__ = ["Reconciler"]

Problem = tuple["int | None", str]


def _digest(value: Any) -> Any:
    """A value as a short digest (a string); None, a boolean or a number as it is, which no
    digest can equal."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:32]


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _instant(value: Any) -> str | None:
    """A time, from the store or from an event body, in one spelling (UTC ISO 8601)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value.isoformat()
    return str(value)


# Each view is what one row must hold, as a dict of comparable values: built from the row, and
# from the events, the same way. A decision's view is kept as one digest (its JSON values whole);
# the others keep their large values as digests, so a difference can be named field by field.
def _decision_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"trace_id": row["trace_id"], "tool": row["tool"], "actor": row["actor"], "domain": row["domain"],
            "target": row["target"], "value": _num(row["value"]), "arguments": row["arguments"],
            "context": row["context"], "result": row["result"], "policy_version": row["policy_version"],
            "decided_at": _instant(row["decided_at"]), "decision": row["decision"]}  # fmt: skip


def _decision_from_event(body: dict[str, Any]) -> dict[str, Any]:
    action, decision = body["payload"]["action"], body["payload"]["decision"]
    return {"trace_id": body["trace_id"], "tool": action.get("tool"), "actor": action.get("actor"),
            "domain": action.get("domain"), "target": action.get("target"), "value": _num(action.get("value")),
            "arguments": action.get("arguments"), "context": action.get("context"),
            "result": decision.get("result"), "policy_version": decision.get("policy_version"),
            "decided_at": _instant(decision.get("decided_at")), "decision": decision}  # fmt: skip


def _approval_from_row(row: dict[str, Any]) -> dict[str, Any]:
    data = dict(row["data"] or {})
    data["value"] = _num(data.get("value"))
    return {"request_id": row["request_id"], "status": row["status"], "approvals_required": row["approvals_required"],
            "args_hash": row["args_hash"], "policy_version": row["policy_version"],
            "created_at": _instant(row["created_at"]), "expires_at": _instant(row["expires_at"]),
            "resolved_at": _instant(row["resolved_at"]), "resolved_by": row["resolved_by"], "comment": row["comment"],
            "data": _digest(data)}  # fmt: skip


def _execution_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"status": row["status"], "claimed_by": row["claimed_by"], "claimed_at": _instant(row["claimed_at"]),
            "reported_at": _instant(row["reported_at"]), "result_summary": _digest(row["result_summary"]),
            "error": row["error"]}  # fmt: skip


_OUTCOME_FIELDS = ("request_id", "status", "severity", "cost", "description", "observed_at", "reported_by", "recorded_at")


def _outcome_view(source: dict[str, Any]) -> dict[str, Any]:
    view = {k: source.get(k) for k in _OUTCOME_FIELDS}
    view["severity"], view["cost"] = _num(view["severity"]), _num(view["cost"])
    view["observed_at"], view["recorded_at"] = _instant(view["observed_at"]), _instant(view["recorded_at"])
    return view


class Reconciler:
    """What the chain says each state row must hold; :meth:`see` each event, then :meth:`check`."""

    def __init__(self) -> None:
        # request_id -> (seq of decision.made, digest of the decision view)
        self.decisions: dict[str, tuple[int, str]] = {}
        # approval_id -> (seq of its newest event, view); execution request_id -> (seq, view)
        self.approvals: dict[str, tuple[int, dict[str, Any]]] = {}
        self.executions: dict[str, tuple[int, dict[str, Any]]] = {}
        self.outcomes: dict[str, tuple[int, str]] = {}
        # policy version, API key id, kill switch (scope, value) -> (seq, view)
        self.policies: dict[int, tuple[int, dict[str, Any]]] = {}
        self.api_keys: dict[str, tuple[int, dict[str, Any]]] = {}
        self.kill_switches: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self.problems: list[Problem] = []
        self._decided: tuple[str, dict[str, Any]] | None = None  # the last decision.made: (request_id, payload)

    def see(self, row: dict[str, Any], body: dict[str, Any]) -> None:
        handler = _HANDLERS.get(body.get("type", ""))
        if handler is None:
            return
        try:
            handler(self, row["seq"], body)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            self.problems.append((row["seq"], f"event {row['seq']} ({body.get('type')}) lacks what it should hold ({exc!r})"))

    def _decision_made(self, seq: int, body: dict[str, Any]) -> None:
        rid = body["request_id"]
        self.decisions[rid] = (seq, _digest(_decision_from_event(body)))
        self._decided = (rid, body["payload"])

    def _approval_requested(self, seq: int, body: dict[str, Any]) -> None:
        rid, p = body["request_id"], body["payload"]
        if self._decided is None or self._decided[0] != rid:
            self.problems.append((seq, f"event {seq} requests approval {p['approval_id']} with no decision before it"))
            return
        action, decision = self._decided[1]["action"], self._decided[1]["decision"]
        data = {"tool": action["tool"], "actor": action["actor"], "domain": action["domain"],
                "value": _num(action.get("value")), "arguments": action["arguments"], "reason": decision["reason"]}  # fmt: skip
        self.approvals[p["approval_id"]] = (seq, {
            "request_id": rid, "status": "pending", "approvals_required": p["approvals_required"],
            "args_hash": decision["args_hash"], "policy_version": decision["policy_version"],
            "created_at": _instant(body["created_at"]), "expires_at": _instant(p["expires_at"]),
            "resolved_at": None, "resolved_by": None, "comment": None, "data": _digest(data),
        })  # fmt: skip

    def _approval_closed(self, seq: int, body: dict[str, Any]) -> None:
        p = body["payload"]
        known = self.approvals.get(p["approval_id"])
        if known is None:
            self.problems.append((seq, f"event {seq} closes approval {p['approval_id']}, which was never requested"))
            return
        view = dict(known[1], resolved_at=_instant(body["created_at"]))
        if body["type"] == "approval.expired":
            view["status"] = "expired"
        else:
            view.update(status=p["resolution"], resolved_by=p["approver"], comment=p.get("comment"))
        self.approvals[p["approval_id"]] = (seq, view)

    def _execution_claimed(self, seq: int, body: dict[str, Any]) -> None:
        self.executions[body["request_id"]] = (seq, {
            "status": "unknown", "claimed_by": body["payload"]["claimed_by"], "claimed_at": _instant(body["created_at"]),
            "reported_at": None, "result_summary": _digest(None), "error": None})  # fmt: skip

    def _execution_recorded(self, seq: int, body: dict[str, Any]) -> None:
        p = body["payload"]
        before = self.executions.get(body["request_id"])
        claimed = before[1] if before is not None else {"claimed_by": None, "claimed_at": None}
        self.executions[body["request_id"]] = (seq, {
            "status": p["status"], "claimed_by": claimed["claimed_by"], "claimed_at": claimed["claimed_at"],
            "reported_at": _instant(body["created_at"]), "result_summary": _digest(p.get("result_summary")),
            "error": p.get("error")})  # fmt: skip

    def _outcome_reported(self, seq: int, body: dict[str, Any]) -> None:
        self.outcomes[body["payload"]["event_id"]] = (seq, _digest(_outcome_view(body["payload"])))

    def _rules_applied(self, seq: int, body: dict[str, Any]) -> None:
        p = body["payload"]
        self.policies[int(p["policy_version"])] = (seq, {"digest": p["digest"], "applied_by": p.get("applied_by"),
                                                         "applied_at": _instant(body["created_at"])})  # fmt: skip

    def _kill_switch(self, seq: int, body: dict[str, Any]) -> None:
        p = body["payload"]
        if body["type"] == "kill_switch.activated":
            self.kill_switches[(p["scope"], p.get("value", ""))] = (seq, {
                "reason": p.get("reason"), "activated_by": p.get("activated_by"), "activated_at": _instant(p["activated_at"])})  # fmt: skip
        else:
            self.kill_switches.pop((p["scope"], p.get("value", "")), None)

    def _api_key(self, seq: int, body: dict[str, Any]) -> None:
        p = body["payload"]
        if body["type"] == "api_key.created":
            self.api_keys[p["key_id"]] = (seq, {"name": p["name"], "role": p["role"], "identity": p["identity"],
                                                "created_by": p.get("created_by"), "created_at": _instant(body["created_at"]),
                                                "revoked_at": None, "revoked_by": None})  # fmt: skip
        elif p["key_id"] in self.api_keys:
            view = dict(self.api_keys[p["key_id"]][1], revoked_at=_instant(body["created_at"]), revoked_by=p.get("revoked_by"))
            self.api_keys[p["key_id"]] = (seq, view)
        else:
            self.problems.append((seq, f"event {seq} revokes API key {p['key_id']}, which was never created"))

    # -- the tables ------------------------------------------------------------------------
    def check(self, tx: SqlTx) -> tuple[int, list[Problem]]:
        """Compare every row of the four tables with what the chain says; returns the rows read
        and the problems (those found while reading the events first)."""
        problems, rows = list(self.problems), 0
        # After a prune (``clearance store prune``) the events of rows kept from before the cut are
        # in the archive, not the chain: such rows cannot be checked here and are not reported.
        pruned = tx.chain_cut() is not None

        def table(name: str, key: str, what: str, expected: dict[str, Any], compare: Callable[..., Problem | None]) -> None:
            nonlocal rows
            seen = set()
            for row in tx.iter_rows(name):
                rows += 1
                ident = row[key]
                seen.add(ident)
                want = expected.get(ident)
                if want is None:
                    if pruned:
                        continue
                    problems.append((None, f"{what} {ident} is in the {name} table but not in the audit trail: the row "
                                     "was added outside clearance"))  # fmt: skip
                    continue
                found = compare(tx, ident, row, want)
                if found is not None:
                    problems.append(found)
            for ident in expected.keys() - seen:
                seq = expected[ident][0]
                problems.append((seq, f"{what} {ident} is in the audit trail (event {seq}) but its row is missing "
                                 f"from the {name} table"))  # fmt: skip

        table("decisions", "request_id", "decision", self.decisions, _compare_decision)
        table("approvals", "approval_id", "approval", self.approvals, _compare_view(_approval_from_row, "approval"))
        table("executions", "request_id", "the execution of", self.executions, _compare_view(_execution_from_row, "execution"))
        table("outcomes", "event_id", "outcome", self.outcomes, _compare_outcome)
        table("policies", "version", "policy version", self.policies, _compare_policy)
        table("api_keys", "key_id", "API key", self.api_keys, _compare_view(_api_key_from_row, "API key"))
        switches = {(r["scope"], r["value"]): r for r in tx.kill_switches()}
        rows += len(switches)
        for ident, row in switches.items():
            want = self.kill_switches.get(ident)
            name = "everything" if ident[0] == "all" else f"{ident[0]} {ident[1]}"
            if want is None:
                if pruned:
                    continue
                problems.append((None, f"the kill switch for {name} is in the kill_switches table but not in the audit "
                                 "trail: the row was added outside clearance"))  # fmt: skip
            elif fields := _differs(_kill_switch_from_row(row), want[1]):
                problems.append((want[0], f"the kill switch row for {name} disagrees with its audit event {want[0]} "
                                 f"({', '.join(fields)}): the row was edited outside clearance"))  # fmt: skip
        for ident in self.kill_switches.keys() - switches.keys():
            seq = self.kill_switches[ident][0]
            name = "everything" if ident[0] == "all" else f"{ident[0]} {ident[1]}"
            problems.append((seq, f"the kill switch for {name} was activated (event {seq}) and never deactivated, but its "
                             "row is missing: calls it should block are let through"))  # fmt: skip
        return rows, problems


def _differs(found: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [k for k in want if found.get(k) != want[k]]


def _compare_decision(tx: SqlTx, rid: str, row: dict[str, Any], want: tuple[int, str]) -> Problem | None:
    seq, digest = want
    view = _decision_from_row(row)
    if _digest(view) == digest:
        return None
    event = tx.event_at(seq)  # rare: read the event again to name what differs
    fields = _differs(view, _decision_from_event(json.loads(event["body"]))) if event is not None else []
    return (seq, f"the decision row {rid} disagrees with its audit event {seq} ({', '.join(fields) or 'contents'}): "
            "the row was edited outside clearance")  # fmt: skip


def _compare_view(from_row: Callable[[dict[str, Any]], dict[str, Any]], what: str) -> Callable[..., Problem | None]:
    def compare(tx: SqlTx, ident: str, row: dict[str, Any], want: tuple[int, dict[str, Any]]) -> Problem | None:
        seq, view = want
        fields = _differs(from_row(row), view)
        if not fields:
            return None
        return (seq, f"the {what} row {ident} disagrees with its audit event {seq} ({', '.join(fields)}): the row was "
                "edited outside clearance")  # fmt: skip

    return compare


def _compare_outcome(tx: SqlTx, ident: str, row: dict[str, Any], want: tuple[int, str]) -> Problem | None:
    seq, digest = want
    if _digest(_outcome_view(row)) == digest:
        return None
    return (seq, f"the outcome row {ident} disagrees with its audit event {seq}: the row was edited outside clearance")


def _compare_policy(tx: SqlTx, version: int, row: dict[str, Any], want: tuple[int, dict[str, Any]]) -> Problem | None:
    from clearance.policy import RuleFile, RuleSet

    seq, view = want
    fields = _differs({"digest": row["digest"], "applied_by": row["applied_by"], "applied_at": _instant(row["applied_at"])}, view)
    try:
        if RuleSet.compile(RuleFile.model_validate(row["document"]), "verify").digest() != row["digest"]:
            fields.append("document")
    except Exception:  # noqa: BLE001 - a document that no longer loads was edited too
        fields.append("document")
    if not fields:
        return None
    return (seq, f"the rules of policy version {version} disagree with their audit event {seq} ({', '.join(fields)}): "
            "the policy was edited outside clearance")  # fmt: skip


def _api_key_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "role": row["role"], "identity": row["identity"], "created_by": row["created_by"],
            "created_at": _instant(row["created_at"]), "revoked_at": _instant(row["revoked_at"]),
            "revoked_by": row["revoked_by"]}  # fmt: skip


def _kill_switch_from_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"reason": row["reason"], "activated_by": row["activated_by"], "activated_at": _instant(row["activated_at"])}


_HANDLERS: dict[str, Callable[[Reconciler, int, dict[str, Any]], None]] = {
    "decision.made": Reconciler._decision_made,
    "approval.requested": Reconciler._approval_requested,
    "approval.resolved": Reconciler._approval_closed,
    "approval.expired": Reconciler._approval_closed,
    "execution.claimed": Reconciler._execution_claimed,
    "execution.recorded": Reconciler._execution_recorded,
    "outcome.reported": Reconciler._outcome_reported,
    "rules.applied": Reconciler._rules_applied,
    "kill_switch.activated": Reconciler._kill_switch,
    "kill_switch.deactivated": Reconciler._kill_switch,
    "api_key.created": Reconciler._api_key,
    "api_key.revoked": Reconciler._api_key,
}
