"""The embedded engine: policy + memory + store, one durable transaction per operation.

Every state change and its audit event commit together, so the trail can never miss a decision
and a decision never exists without its trail. Nothing here knows which database it is on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from clearance.engine import anchor, audit, executions
from clearance.engine.audit import AuditReport
from clearance.engine.keys import Keys
from clearance.engine.drift import DriftWatch
from clearance.engine.recheck import recheck_claim
from clearance.engine.open_calls import open_approval
from clearance.engine.redaction_key import resolve_key
from clearance.engine.tool_pins import ToolPins
from clearance.engine.snapshots import SnapshotInfo, Snapshots
from clearance.errors import (
    AlreadyClaimed,
    AnchorError,
    ClearanceError,
    ApprovalExpired,
    ApprovalNotPending,
    ArgumentsMismatch,
    ConflictError,
    DuplicateVote,
    NotApproved,
    NotFound,
    NotYours,
    RunBusy,
    RunStateTampered,
    UnknownRequest,
)
from clearance.memory import Memory, RiskEstimate, default_memory
from clearance.memory.drift import DriftSettings
from clearance.model import (
    NOT_RUN_STATUSES,
    Action,
    Approval,
    ApprovalStatus,
    ApprovalVote,
    Decision,
    DecisionResult,
    Event,
    Execution,
    ExecutionStatus,
    KillSwitch,
    Outcome,
    OutcomeStatus,
    Precedent,
    RawJSON,
    canonical_json,
    new_id,
    utcnow,
)
from clearance.policy import Rule, RuleFile, RuleSet, Usage, Verdict, evaluate, load_rules, usage_lookups
from clearance.policy.risk import apply_risk, resolve_risk
from clearance.redaction import RedactionSettings, Redactor
from clearance.store import SqlStore, SqlTx, open_store
from clearance.store.idempotency import KEEP as IDEMPOTENCY_KEEP
from clearance.store.idempotency import IdempotencyKeys, KeptAnswer
from clearance.store.outbox import WebhookOutbox

if TYPE_CHECKING:
    from clearance.engine.backtest import BacktestReport
    from clearance.engine.evidence import Promotion, RuleEvidence
    from clearance.engine.retention import PruneReport
    from clearance.memory.report import LearningReport

__all__ = ["Engine", "PolicyInfo"]

DEFAULT_APPROVAL_TTL = timedelta(hours=24)
#: How long a resumer may hold a run before another may take it (a crashed resumer's lease lapses).
RUN_LEASE = timedelta(minutes=10)


#: What a decision made by rules alone while memory is still loading says of its risk.
RULES_ONLY_WARMING = "memory is still loading: decided by rules alone"

#: The estimate of a memory that does not learn.
_NO_ESTIMATE = RiskEstimate()

#: The most events of one request that ``verify_audit(request_id=...)`` checks (a request has a
#: handful; the bound keeps one view's cost bounded whatever is stored).
_REQUEST_EVENTS_CHECKED = 1000


@dataclass(frozen=True)
class PolicyInfo:
    version: int
    digest: str
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: bool = False


def _approval(row: dict[str, Any], votes: list[dict[str, Any]]) -> Approval:
    """An approvals row (what the call was is kept in its ``data``) and its votes, as the model."""
    return Approval(**{k: v for k, v in row.items() if k != "data"}, **row["data"],
                    votes=[ApprovalVote(**{k: v[k] for k in ApprovalVote.model_fields}) for v in votes])  # fmt: skip


def _execution(row: dict[str, Any]) -> Execution:
    return Execution(**{k: row[k] for k in Execution.model_fields})


def _outcome(row: dict[str, Any]) -> Outcome:
    return Outcome(**{k: row[k] for k in Outcome.model_fields})


class Engine:
    """Decides tool calls and keeps the record.

    Thread-safe: share one engine between threads; each call opens its own transaction.
    ``rules`` pins a rule set (a file, a :class:`RuleFile`) instead of the store's applied
    policy, for dry runs and ``clearance check --rules``.

    ``redaction`` adds argument names and patterns to what is redacted before anything is kept
    (``False`` turns redaction off); ``redaction_key`` is the store's key (see
    :mod:`clearance.engine.redaction_key` for where it is found otherwise). ``drift`` sets the
    sequential test on bad-outcome rates (:class:`~clearance.memory.drift.DriftSettings`; ``False``: off).
    """

    def __init__(
        self,
        store: SqlStore | str | Path | None = None,
        *,
        rules: RuleFile | str | Path | None = None,
        memory: Memory | None = None,
        clock: Callable[[], datetime] = utcnow,
        default_approval_ttl: timedelta = DEFAULT_APPROVAL_TTL,
        redaction: RedactionSettings | Mapping[str, Any] | bool | None = None,
        redaction_key: bytes | str | None = None,
        drift: DriftSettings | bool | None = None,
        anchor_key: anchor.PrivateKeySource | None = None,
        checkpoint_every: int = 0,
    ) -> None:
        if redaction is False:
            settings = RedactionSettings(enabled=False)
        elif isinstance(redaction, RedactionSettings):
            settings = redaction
        else:
            settings = RedactionSettings.model_validate(redaction if isinstance(redaction, Mapping) else {})
        self.memory: Memory = memory if memory is not None else default_memory()  # before the store: it may refuse its settings
        self.store = store if isinstance(store, SqlStore) else open_store(store)
        #: Redacts what the engine keeps (:mod:`clearance.redaction`); the rules file may add to it.
        self._redaction_key = resolve_key(self.store.url, redaction_key)
        self.redactor = Redactor(self._redaction_key, settings)
        self._redactors: dict[str, Redactor] = {}  # by policy version, for rules files with a redaction: block
        self._memory_warm = False
        self.clock = clock
        self.default_approval_ttl = default_approval_ttl
        self._pinned: RuleSet | None = None
        if rules is not None:
            source = rules if isinstance(rules, RuleFile) else load_rules(rules)
            probe = RuleSet.compile(source, "file")
            self._pinned = RuleSet.compile(source, f"file:{probe.digest()[:12]}")
        self._cached: tuple[int, RuleSet] | None = None
        self._cache_lock = threading.Lock()
        self._keyed = 0  # decisions made under an Idempotency-Key, modulo _PRUNE_EVERY
        #: The API keys the server authenticates with (:class:`clearance.engine.keys.Keys`).
        self.keys = Keys(self.store)
        #: Drift in bad-outcome rates (:mod:`clearance.engine.drift`); ``drift=False`` turns it off.
        self.drift = DriftWatch(drift if isinstance(drift, DriftSettings) else DriftSettings(enabled=drift is not False))
        # The key that signs checkpoints of the audit chain (clearance.engine.anchor), kept
        # outside the database; with checkpoint_every, each write that passes a multiple of it signs.
        self._anchor_key = anchor.load_private_key(anchor_key) if anchor_key is not None else None
        if checkpoint_every:
            if self._anchor_key is None:
                raise ValueError("checkpoint_every needs an anchor_key to sign with (make one: clearance audit keygen)")
            self.store.on_append.append(anchor.periodic(self._anchor_key, checkpoint_every))
        #: Memory's snapshot beside the store (:mod:`clearance.engine.snapshots`): loaded by
        #: :meth:`warm_memory`, saved by :meth:`save_memory_snapshot`.
        self.snapshots = Snapshots(self)
        self.snapshot_loaded: SnapshotInfo | None = None
        #: True: until memory is warm, calls are decided by rules alone (and say so) instead of
        #: waiting for it (``clearance serve --warmup rules``).
        self.rules_only_while_warming = False
        if hasattr(self.memory, "recall"):
            self.memory.recall = self._recall  # late outcomes of calls memory stopped waiting for

    @functools.cached_property
    def idempotency(self) -> IdempotencyKeys:
        """Idempotency keys of requests made outside a decision's transaction (the server's
        ``Idempotency-Key`` on every route but ``POST /v1/decisions``)."""
        return IdempotencyKeys(self.store, seal=self.redactor.seal_text, unseal=self.redactor.unseal_text)

    @functools.cached_property
    def tool_pins(self) -> ToolPins:
        """The digests of the tool definitions MCP servers showed, pinned in the audit chain
        (:mod:`clearance.engine.tool_pins`)."""
        return ToolPins(self.store, lambda: self.clock())

    def webhook_outbox(self, endpoints: Mapping[str, str], events: Sequence[str], *, worker_id: str, batch: int = 50,
                       lease_seconds: float = 60.0, retention_days: float = 7.0) -> WebhookOutbox:  # fmt: skip
        """The outbox one webhook sender works from: its endpoints (id -> URL) and event types."""
        return WebhookOutbox(self.store, endpoints, events, worker_id=worker_id, batch=batch, lease_seconds=lease_seconds,
                             retention_days=retention_days)  # fmt: skip

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        if "idempotency" in self.__dict__:
            self.idempotency.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rules ----------------------------------------------------------------------------
    def _rules(self, tx: SqlTx) -> RuleSet:
        if self._pinned is not None:
            return self._pinned
        head = tx.policy_head()
        cached = self._cached
        if cached is not None and cached[0] == head:
            return cached[1]
        if head == 0:
            ruleset = RuleSet.empty()
        else:
            row = tx.get_policy(head)
            assert row is not None
            ruleset = RuleSet.compile(RuleFile.model_validate(row["document"]), str(head), row["rule_versions"])
        with self._cache_lock:
            self._cached = (head, ruleset)
        return ruleset

    def redactor_for(self, rules: RuleSet | None) -> Redactor:
        """The redactor of a rule set: the engine's, plus the rules file's ``redaction:`` block."""
        extra = rules.source.redaction if rules is not None else None
        if extra is None:
            return self.redactor
        found = self._redactors.get(rules.policy_version)  # type: ignore[union-attr]
        if found is None:
            found = Redactor(self._redaction_key, self.redactor.settings.merged(extra))
            with self._cache_lock:
                if len(self._redactors) > 64:
                    self._redactors.clear()
                self._redactors[rules.policy_version] = found  # type: ignore[union-attr]
        return found

    def _redactor(self, tx: SqlTx) -> Redactor:
        return self.redactor_for(self._rules(tx))

    def args_hash(self, arguments: Mapping[str, Any]) -> str:
        """What binds a decision (and an approval) to its exact arguments: a keyed hash, so that a
        stored hash cannot be matched against guessed arguments (a card number) without the key."""
        return self.redactor.keyed_hash(canonical_json(dict(arguments)))

    def current_rules(self) -> RuleSet:
        with self.store.read() as tx:
            return self._rules(tx)

    def apply_rules(self, rules: RuleFile | str | Path, *, applied_by: str | None = None) -> PolicyInfo:
        """Make a rules file the policy; a new version only when something changed."""
        source = rules if isinstance(rules, RuleFile) else load_rules(rules)
        now = self.clock()
        with self.store.write() as tx:
            return self._apply(tx, source, applied_by, now)

    def edit_rule(self, change: Literal["add", "replace", "remove", "pause", "resume"], rule_id: str,
                  rule: Rule | None = None, *, applied_by: str | None = None) -> PolicyInfo:  # fmt: skip
        """Change one rule of the policy in force (the rest of the document as it is), reading and
        writing in one transaction under the store's writer lock: edits made at the same time,
        through any number of processes, each see the one before and none is lost."""
        if (rule is None) != (change in ("remove", "pause", "resume")):
            raise ValueError(f"{change!r} {'takes no' if rule is not None else 'needs a'} rule")
        if rule is not None and rule.id != rule_id:
            raise ValueError(f"the rule's id {rule.id!r} differs from {rule_id!r}")
        now = self.clock()
        with self.store.write() as tx:
            head = tx.policy_head()
            row = tx.get_policy(head) if head else None
            source = RuleFile.model_validate(row["document"]) if row is not None else RuleFile()
            rules = list(source.rules)
            at = next((i for i, r in enumerate(rules) if r.id == rule_id), None)
            if change == "add":
                if at is not None:
                    raise ConflictError(f"rule {rule_id!r} exists already; replace it instead")
                rules.append(rule)  # type: ignore[arg-type]
            elif at is None:
                raise NotFound(f"no rule {rule_id!r} in the rules in force")
            elif change == "replace":
                rules[at] = rule  # type: ignore[assignment]
            elif change == "remove":
                del rules[at]
            else:
                rules[at] = rules[at].model_copy(update={"status": "paused" if change == "pause" else "active"})
            return self._apply(tx, source.model_copy(update={"rules": rules}), applied_by, now)

    def _apply(self, tx: SqlTx, source: RuleFile, applied_by: str | None, now: datetime) -> PolicyInfo:
        digest = RuleSet.compile(source, "pending").digest()  # CEL conditions, time zones: raises before any write
        head = tx.policy_head()
        prev = tx.get_policy(head) if head else None
        if prev is not None and prev["digest"] == digest:
            return PolicyInfo(head, digest, [], [], [], unchanged=True)
        old_rules = {r["id"]: r for r in (prev["document"]["rules"] if prev else [])}
        old_versions: dict[str, int] = prev["rule_versions"] if prev else {}
        versions, added, changed = {}, [], []
        for rule in source.rules:
            old = old_rules.get(rule.id)
            if old is None:
                versions[rule.id] = old_versions.get(rule.id, 0) + 1
                added.append(rule.id)
            elif RuleFile.model_validate({"rules": [old]}).rules[0].content_digest() != rule.content_digest():
                versions[rule.id] = old_versions.get(rule.id, 1) + 1
                changed.append(rule.id)
            else:
                versions[rule.id] = old_versions.get(rule.id, 1)
        removed = sorted(set(old_rules) - {r.id for r in source.rules})
        # Keep the versions of removed rules, so a rule that comes back continues its count.
        all_versions = {**old_versions, **versions}
        version = head + 1
        tx.insert_policy({"version": version, "digest": digest, "document": source.model_dump(mode="json", exclude_none=True),
                          "rule_versions": all_versions, "applied_at": now, "applied_by": applied_by})  # fmt: skip
        audit.append(tx, "rules.applied", {"policy_version": str(version), "digest": digest, "added": added,
                     "changed": changed, "removed": removed, "applied_by": applied_by}, now=now)  # fmt: skip
        return PolicyInfo(version, digest, added, changed, removed)

    def rules_at(self, version: int) -> RuleSet:
        """The rules of one applied policy version."""
        with self.store.read() as tx:
            row = tx.get_policy(version) if version >= 1 else None
        if row is None:
            raise NotFound(f"no policy version {version}")
        return RuleSet.compile(RuleFile.model_validate(row["document"]), str(version), row["rule_versions"])

    def policy_versions(self) -> list[dict[str, Any]]:
        with self.store.read() as tx:
            return tx.list_policies()

    def backtest(self, rules: RuleFile | str | Path, *, since: datetime | None = None) -> BacktestReport:
        """What a candidate rules file would have done to the decisions recorded since ``since``;
        writes nothing (:mod:`clearance.engine.backtest`)."""
        from clearance.engine.backtest import backtest

        return backtest(self, rules if isinstance(rules, RuleFile) else load_rules(rules), since=since)

    def rule_evidence(self, rule_id: str, *, since: datetime | None = None) -> RuleEvidence:
        """A rule's recorded would-have-fired calls joined with their outcomes (:mod:`clearance.engine.evidence`)."""
        from clearance.engine.evidence import rule_evidence

        return rule_evidence(self, rule_id, since=since)

    def promote_rule(self, rule_id: str, *, force: bool = False, min_outcomes: int = 1,
                     applied_by: str | None = None) -> Promotion:  # fmt: skip
        """Turn a shadow rule on, with its evidence; refused without evidence unless ``force``."""
        from clearance.engine.evidence import promote_rule

        return promote_rule(self, rule_id, force=force, min_outcomes=min_outcomes, applied_by=applied_by)

    # -- decisions ------------------------------------------------------------------------
    def evaluate(self, action: Action | Mapping[str, Any]) -> Decision:
        """Decide one call. The decision and its audit event are committed before this returns."""
        return self.evaluate_serialised(action)[0]

    def evaluate_serialised(self, action: Action | Mapping[str, Any], *,
                            key: tuple[str, str, str] | None = None) -> tuple[Decision, str] | KeptAnswer:  # fmt: skip
        """:meth:`evaluate`, and the decision as the canonical JSON the store keeps of it (keys
        sorted; the same fields as ``model_dump_json``), for callers that send it on: the
        server answers with it rather than serialising the decision a second time.

        ``key`` is an ``Idempotency-Key`` (API key id, the key, the request's fingerprint): the
        answer kept under it, if there is one, is returned instead of deciding (a
        :data:`KeptAnswer`); else the decision's JSON is kept under it in the decision's own
        transaction, so the key, the decision and the answer become durable together."""
        action = action if isinstance(action, Action) else Action.model_validate(action)
        now = self.clock()
        learns = self.memory.learns
        warming = False
        if learns and not self._memory_warm:
            if self.rules_only_while_warming:
                learns, warming = False, True  # memory catches up from the log once warm
            else:
                self.warm_memory()
        request_id = new_id("req")
        trace_id = action.trace_id or new_id("trc")
        args_hash = self.args_hash(action.arguments)
        # The rules most likely in force say which counters this call will ask about, so they are
        # read in the transaction's first statement; a policy change since only means more reads.
        planned = self._pinned or (self._cached[1] if self._cached is not None else None)
        redactor = self.redactor_for(planned)
        # What is kept (rows, audit, memory, counters' targets) is the redacted copy; the
        # rules judge ``action`` itself.
        stored = _redacted(redactor, action)
        action_json, arguments_json = _serialised(stored)
        lookups = usage_lookups(planned, stored, now) if planned is not None else []
        with self.store.write() as tx:
            if key is not None:
                kept = tx.idempotent_answer(key[0], key[1])
                if kept is not None:
                    return kept
                self._keyed = (self._keyed + 1) % self._PRUNE_EVERY
                if self._keyed == 0:
                    tx.prune_idempotent_answers(now - IDEMPOTENCY_KEEP)
            known = _UsageAt.answers(lookups, tx.usage_lookups(lookups, now))
            rules = self._rules(tx)
            if self.redactor_for(rules) is not redactor:  # the policy changed its redaction: block since
                redactor = self.redactor_for(rules)
                stored = _redacted(redactor, action)
                action_json, arguments_json = _serialised(stored)
            verdict, rules_result, estimate = self._judge(tx, rules, action, now, known, stored, redactor, use_memory=learns)
            patches = verdict.patches
            if verdict.action is not None:  # a constrained allow patched the call: the patched call is the one decided
                action = verdict.action
                stored = _redacted(redactor, action)
                action_json, arguments_json = _serialised(stored)
                args_hash = self.args_hash(action.arguments)
                # The originals are the caller's (redacted as arguments are); the new values are the rules file's.
                patches = [p.model_copy(update={"original": redactor.value({p.argument: p.original})[p.argument]})
                           for p in patches]  # fmt: skip
            approval_id = expires = None
            if verdict.result is DecisionResult.requires_approval:
                approval_id = new_id("apr")
                expires = now + (verdict.approval_ttl or self.default_approval_ttl)
            decision = Decision(
                request_id=request_id,
                trace_id=trace_id,
                tool=action.tool,
                actor=action.actor,
                domain=action.domain,
                result=verdict.result,
                reason=redactor.text(verdict.reason),
                risk_score=min(max(estimate.risk, 0.0), 1.0),
                matched_rules=verdict.matched,
                shadow_rules=verdict.shadow,
                precedents=estimate.precedents,
                evidence=estimate.evidence,
                risk_summary=estimate.summary if learns else (RULES_ONLY_WARMING if warming else None),
                rules_result=rules_result,
                policy_version=rules.policy_version,
                decided_at=now,
                approval_id=approval_id,
                approval_expires_at=expires,
                args_hash=args_hash,
                patches=patches,
            )
            # Serialised once: the decisions row and the audit body hold the same text (the store
            # keeps it, and the arguments, once: in the row).
            decision_json = RawJSON(canonical_json(decision.model_dump(mode="json")))
            tx.insert_decision({
                "request_id": request_id, "trace_id": trace_id, "tool": action.tool, "actor": action.actor,
                "domain": action.domain, "target": stored.target, "value": action.value,
                "arguments": arguments_json, "context": stored.context, "result": verdict.result.value,
                "policy_version": rules.policy_version, "decided_at": now, "decision": decision_json,
            })  # fmt: skip
            if verdict.result is not DecisionResult.blocked and verdict.counted_rules:
                tx.add_usage([
                    {"request_id": request_id, "rule_id": rid, "actor": action.actor, "target": stored.target or "",
                     "value": action.value or 0.0, "at": now, "expires_at": expires}
                    for rid in verdict.counted_rules
                ])  # fmt: skip
            # canonical_json({"action": ..., "decision": ...}), from the parts already serialised.
            events: list[tuple[str, dict[str, Any] | RawJSON]] = [
                ("decision.made", RawJSON(f'{{"action":{action_json},"decision":{decision_json}}}'))
            ]
            if approval_id is not None:
                assert expires is not None
                tx.insert_approval({
                    "approval_id": approval_id, "request_id": request_id, "status": "pending",
                    "approvals_required": verdict.approvals_required, "args_hash": args_hash,
                    "policy_version": rules.policy_version, "created_at": now, "expires_at": expires,
                    "data": {"tool": action.tool, "actor": action.actor, "domain": action.domain, "value": action.value,
                             "arguments": stored.arguments, "reason": decision.reason},
                })  # fmt: skip
                events.append(("approval.requested", {"approval_id": approval_id, "expires_at": expires.isoformat(),
                               "approvals_required": verdict.approvals_required}))  # fmt: skip
            written: list[dict[str, Any]] = []
            audit.append_all(tx, events, now=now, request_id=request_id, trace_id=trace_id, rows_out=written,
                             decision_text=decision_json, arguments_text=arguments_json)  # fmt: skip
            if key is not None:
                tx.keep_idempotent_answer(key[0], key[1], key[2], 200, None, now, request_id=request_id)
        if learns:
            # Memory learns of this decision now, from the objects at hand, so the next call
            # need not read it back; any event another writer slipped in is read on the next call.
            written[0]["payload"] = {"action": stored, "decision": {"request_id": request_id, "result": verdict.result.value,
                                                                    "decided_at": now}}  # fmt: skip
            self.memory.ingest(written)
        return decision, decision_json

    def _judge(self, tx: SqlTx | None, rules: RuleSet, action: Action, now: datetime,
               known: Mapping[tuple[Any, ...], Any] | None = None, stored: Action | None = None,
               redactor: Redactor | None = None, *, usage: Usage | None = None,
               use_memory: bool = True) -> tuple[Verdict, DecisionResult, RiskEstimate]:  # fmt: skip
        """The verdict on one call (kill switch, rules, then memory's risk), the rules' verdict
        alone, and memory's estimate. Reads only: ``evaluate``, ``dry_run`` and the backtest share it.

        The rules see ``action`` in clear; memory and the counters see ``stored``, its redacted
        copy, which is what they are fed from the record. A replay (the backtest) passes no
        transaction, its own counters as ``usage`` and ``use_memory=False``: history's kill switches
        and risk are its record's, not today's."""
        redactor = redactor or self.redactor_for(rules)
        stored = stored or _redacted(redactor, action)
        switch = self._kill_switch_for(tx, action) if tx is not None else None
        if switch is not None:
            verdict = Verdict(DecisionResult.blocked, _kill_reason(switch))
        else:
            assert tx is not None or usage is not None
            verdict = evaluate(rules, action, now, usage or _UsageAt(tx, now, known, redactor.text))  # type: ignore[arg-type]
            if verdict.action is not None:  # patched by a constrained allow: memory judges the patched call too
                action, stored = verdict.action, _redacted(redactor, verdict.action)
        rules_result = verdict.result
        estimate = _NO_ESTIMATE
        if use_memory and tx is not None and self.memory.learns:
            # Inside the caller's transaction: memory has seen every event before this decision,
            # in every process, and a rebuild from the log will compute the same estimate.
            while not self._catch_up(tx):
                pass
            policy = resolve_risk(rules, action)
            estimate = self.memory.assess(stored, now, half_life_days=policy.half_life_days, prior=policy.prior,
                                          prior_strength=policy.prior_strength,
                                          outcome_error_rate=policy.outcome_error_rate)  # fmt: skip
            if switch is None:
                verdict = apply_risk(verdict, estimate, policy)
        return verdict, rules_result, estimate

    def open_approval(self, action: Action | Mapping[str, Any]) -> Decision | None:
        """The decision of an earlier, identical MCP call whose approval is pending or granted and
        under which nothing has run (:mod:`clearance.engine.open_calls`): a retry waits for or
        runs under it instead of asking a person again."""
        action = action if isinstance(action, Action) else Action.model_validate(action)
        with self.store.read() as tx:
            return open_approval(tx, action, self.args_hash(action.arguments), self.clock())

    def dry_run(self, actions: Sequence[Action | Mapping[str, Any]], *, rules: RuleFile | None = None) -> tuple[str, list[Verdict]]:
        """What ``evaluate`` would decide for each action now, under the rules in force or
        ``rules``, with nothing written: the policy version and one verdict per action."""
        parsed = [a if isinstance(a, Action) else Action.model_validate(a) for a in actions]
        now = self.clock()
        if self.memory.learns and not self._memory_warm:
            self.warm_memory()
        # The writer lock, though nothing is written: memory catches up only under it.
        with self.store.write() as tx:
            ruleset = RuleSet.compile(rules, "dry-run") if rules is not None else self._rules(tx)
            return ruleset.policy_version, [self._judge(tx, ruleset, a, now)[0] for a in parsed]

    def evaluate_batch(self, actions: Sequence[Action | Mapping[str, Any]]) -> list[Decision]:
        """Decide several calls, in order (each durable before the next is decided)."""
        return [self.evaluate(a) for a in actions]

    #: Every this many keyed decisions, answers older than ``IDEMPOTENCY_KEEP`` are dropped.
    _PRUNE_EVERY = 1000

    # -- memory ---------------------------------------------------------------------------
    #: Audit events read per round trip while memory catches up.
    _PAGE = 5000

    def warm_memory(self, progress: Callable[[str], None] | None = None) -> int:
        """Feed memory every audit event it has not seen, outside any writer lock (the first
        decision does this by itself; a server calls it at start so no request waits for a
        rebuild). A fresh memory starts from the store's snapshot when it matches the chain.
        ``progress`` gets a line now and then. Returns the seq memory has reached."""
        if self.memory.learns:
            say = progress or (lambda line: None)
            started = time.monotonic()
            if self.memory.cursor == 0 and self.snapshot_loaded is None:
                info = self.snapshot_loaded = self.snapshots.load()
                if info.status == "loaded":
                    say(f"memory: snapshot loaded at event {info.seq} in {info.seconds:.1f} s")
                elif info.status == "ignored":
                    say(f"memory: snapshot ignored ({info.reason}); rebuilding from the audit log")
            head = 0
            if progress is not None:
                with self.store.read() as tx:
                    head = tx.chain_head()[0]
            done, last = False, time.monotonic()
            while not done:
                with self.store.read() as tx:
                    done = self._catch_up(tx)
                if progress is not None and time.monotonic() - last >= 2.0:
                    last = time.monotonic()
                    say(f"memory: at event {self.memory.cursor} of {head}")
            say(f"memory: ready at event {self.memory.cursor} in {time.monotonic() - started:.1f} s")
        with self.store.read() as tx:
            self.drift.warm(tx)  # the drift streams too, from the record's outcomes
        self._memory_warm = True
        return self.memory.cursor

    @property
    def memory_warm(self) -> bool:
        """Whether memory has caught up with the store once (until then, see ``rules_only_while_warming``)."""
        return self._memory_warm or not self.memory.learns

    def save_memory_snapshot(self, *, if_changed: bool = False) -> SnapshotInfo:
        """Save memory's state beside the store (a file next to a SQLite store, a table in
        PostgreSQL), caught up with the log first. ``if_changed``: not when nothing was learnt
        since the last save. Status ``off`` for a memory that keeps no snapshot."""
        if not self.memory.learns or not self._memory_warm:
            return SnapshotInfo("off" if not self.memory.learns else "cold")
        drift = None
        with self.store.read() as tx:
            while not self._catch_up(tx):
                pass
            if self.drift.settings.enabled:
                # The drift streams too, when they reflect only what this transaction sees
                # committed (not an outcome whose transaction is still open): a restart then
                # reads only the outcomes after them instead of every outcome in the log.
                self.drift.warm(tx)
                drift = self.drift.copy()
                if drift.cursor > tx.chain_head()[0]:
                    drift = None
        return self.snapshots.save(if_changed=if_changed, drift=drift)

    def prune(self, before: datetime, *, archive: str | Path | None = None) -> PruneReport:
        """Archive what was written before ``before`` to a gzip JSON-lines file and delete it,
        leaving the chain's cut so ``verify_audit`` proves the rest (:mod:`clearance.engine.retention`);
        with an anchor key, the head after the cut is signed at once."""
        from clearance.engine.retention import prune

        report = prune(self, before, archive=archive)
        if self._anchor_key is not None:
            self.checkpoint_audit()  # a signed head that includes the cut (the store.pruned event)
        return report

    def _recall(self, request_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The action and decision of a decided call, from its audit event (for memory)."""
        with self.store.read() as tx:
            rows = tx.query_events(request_id=request_id, type="decision.made", limit=1)
        if not rows:
            return None
        payload = json.loads(rows[0]["body"])["payload"]
        return payload["action"], payload["decision"]

    def _catch_up(self, tx: SqlTx) -> bool:
        """Feed memory, within ``tx``, what it has not seen; return whether it has seen all.

        First checks that what it has seen is still the store's history (the event at its
        cursor is there with the same hash). It is not when a transaction memory saw was
        rolled back after all (a failed group commit) or the database was restored from a
        backup; memory then starts over from the log."""
        memory = self.memory
        seen = getattr(memory, "cursor_hash", None)
        head, head_hash = tx.chain_head()
        if head == memory.cursor and (seen is None or head_hash == seen):
            return True  # the common case: nothing new, and no query
        if seen is not None and memory.cursor > 0:
            if head == memory.cursor:
                same = head_hash == seen
            else:
                rows = tx.query_events(after_seq=memory.cursor - 1, limit=1) if head > memory.cursor else []
                same = bool(rows) and rows[0]["seq"] == memory.cursor and rows[0]["hash"] == seen
                if rows and rows[0]["seq"] > memory.cursor:  # gone: archived by a prune since?
                    cut = tx.chain_cut()
                    same = cut is not None and (cut[0] > memory.cursor or cut == (memory.cursor, seen))
            if not same:
                memory.reset()
        rows = tx.query_events(after_seq=memory.cursor, limit=self._PAGE)
        memory.ingest(rows)
        return len(rows) < self._PAGE

    def get_decision(self, request_id: str) -> Decision:
        with self.store.read() as tx:
            row = tx.get_decision(request_id)
        if row is None:
            raise UnknownRequest(request_id)
        return Decision.model_validate(row["decision"])

    #: Rows read per page while ``list_decisions`` looks for a rule among matched rules.
    _LIST_PAGE = 500

    def list_decisions(self, *, result: DecisionResult | str | None = None, tool: str | None = None,
                       actor: str | None = None, domain: str | None = None, rule: str | None = None,
                       since: datetime | None = None, until: datetime | None = None, before: str | None = None,
                       limit: int = 100) -> list[Decision]:  # fmt: skip
        """Decisions newest first, filtered by result, tool, actor, domain, a rule among the
        matched (or shadow) rules, and ``since <= decided_at < until``; ``before`` is the
        request id of the last decision of the previous page."""
        result = DecisionResult(result).value if result is not None else None
        since, until = _aware(since), _aware(until)
        if limit < 1:
            return []
        out: list[Decision] = []
        with self.store.read() as tx:
            cursor: tuple[datetime, str] | None = None
            if before is not None:
                row = tx.get_decision(before)
                if row is None:
                    raise UnknownRequest(before)
                cursor = (row["decided_at"], row["request_id"])
            page = limit if rule is None else max(limit, self._LIST_PAGE)
            while len(out) < limit:
                rows = tx.list_decisions(result=result, tool=tool, actor=actor, domain=domain, since=since, until=until,
                                         before=cursor, limit=page)  # fmt: skip
                for row in rows:
                    decision = Decision.model_validate(row["decision"])
                    if rule is None or any(m.rule_id == rule for m in (*decision.matched_rules, *decision.shadow_rules)):
                        out.append(decision)
                        if len(out) == limit:
                            break
                if len(rows) < page:
                    break
                cursor = (rows[-1]["decided_at"], rows[-1]["request_id"])
        return out

    def precedents(self, request_id: str) -> list[Precedent]:
        """The past cases a decision rested on, strongest first, as it recorded them."""
        return self.get_decision(request_id).precedents

    def learning_report(self) -> LearningReport:
        """What memory changed and how well its risk matched real outcomes (from the audit log)."""
        from clearance.memory.report import build_report

        def events() -> Iterator[dict[str, Any]]:
            after = 0
            while True:
                with self.store.read() as tx:
                    rows = tx.query_events(after_seq=after, limit=self._PAGE)
                yield from rows
                if len(rows) < self._PAGE:
                    return
                after = rows[-1]["seq"]

        return build_report(events())

    def get_action(self, request_id: str) -> Action:
        """The action as it was decided, arguments included."""
        with self.store.read() as tx:
            row = tx.get_decision(request_id)
        if row is None:
            raise UnknownRequest(request_id)
        return Action(tool=row["tool"], arguments=row["arguments"], actor=row["actor"], domain=row["domain"],
                      value=row["value"], target=row["target"], context=row["context"], trace_id=row["trace_id"])  # fmt: skip

    # -- executions -----------------------------------------------------------------------
    def claim_execution(self, request_id: str, *, claimant: str, arguments: Mapping[str, Any] | None = None) -> Execution:
        """Take the one right to run an allowed or approved call.

        Exactly one caller wins; a claim that never reports back stays ``unknown`` (it may have
        run), and is never handed out again.
        """
        now = self.clock()
        with self.store.write() as tx:
            row = tx.get_decision(request_id)
            if row is None:
                raise UnknownRequest(request_id)
            decision = Decision.model_validate(row["decision"])
            # The row is not proof either: the decision is the one its event in the chain holds.
            made = audit.latest(tx, type="decision.made", request_id=request_id, match={})
            recorded = json.loads(made["body"])["payload"]["decision"] if made is not None else None
            if recorded is None or not audit.intact(tx, made) or recorded.get("result") != decision.result.value or (
                    recorded.get("args_hash") != decision.args_hash):  # fmt: skip
                raise NotApproved(f"{request_id} does not match its decision in the audit trail; refusing to run it")
            if arguments is not None and self.args_hash(arguments) != decision.args_hash:
                raise ArgumentsMismatch(f"the arguments differ from those decided under {request_id}; decide them anew")
            if decision.result is DecisionResult.blocked:
                raise NotApproved(f"{request_id} was blocked: {decision.reason}")
            if decision.result is DecisionResult.requires_approval:
                approval = tx.approval_for_request(request_id)
                assert approval is not None
                if approval["status"] == "pending" and approval["expires_at"] <= now:
                    self._expire(tx, approval, now)
                    approval = tx.approval_for_request(request_id)
                    assert approval is not None
                if approval["status"] != "approved":
                    raise NotApproved(f"approval {approval['approval_id']} for {request_id} is {approval['status']}, not approved")
                # The approvals row alone is not proof: a person's answer is an event in the chain.
                evidence = audit.latest(tx, type="approval.resolved", request_id=request_id,
                                        match={"approval_id": approval["approval_id"], "resolution": "approved"})  # fmt: skip
                if evidence is None or not audit.intact(tx, evidence):
                    raise NotApproved(f"approval {approval['approval_id']} for {request_id} has no intact approval "
                                      "in the audit trail; refusing to run it")  # fmt: skip
                recheck_claim(self, tx, row, approval, evidence, now, arguments)  # the policy may have changed since
            existing = tx.get_execution(request_id)
            if existing is not None and existing["status"] != ExecutionStatus.approval_required.value:
                raise AlreadyClaimed(
                    f"{request_id} was already claimed by {existing['claimed_by'] or 'an earlier run'} "
                    f"(execution status {existing['status']})"
                )
            record = {"request_id": request_id, "status": ExecutionStatus.unknown.value, "claimed_by": claimant,
                      "claimed_at": now, "reported_at": None, "result_summary": None, "error": None}  # fmt: skip
            tx.put_execution(record)
            audit.append(tx, "execution.claimed", {"claimed_by": claimant}, now=now,
                         request_id=request_id, trace_id=row["trace_id"])  # fmt: skip
        return _execution(record)

    def record_execution(
        self,
        request_id: str,
        status: ExecutionStatus | str,
        result_summary: Any = None,
        error: str | None = None,
    ) -> Execution:
        """Record what happened to the call; a call that did not run gives back its slots."""
        status = ExecutionStatus(status)
        now = self.clock()
        with self.store.write() as tx:
            return self._record_execution(tx, now, request_id, status, result_summary, error, self._redactor(tx))

    def record_executions(self, reports: Sequence[tuple[str, ExecutionStatus | str, Any, str | None]]) -> list[Execution | ClearanceError]:
        """Record several executions in one durable transaction (one fsync, not one each).

        Each report is ``(request_id, status, result_summary, error)``. A report that is refused
        (unknown request, conflicting status) is returned as its error; the others still commit.
        """
        now = self.clock()
        results: list[Execution | ClearanceError] = []
        written: list[dict[str, Any]] = []
        with self.store.write() as tx:
            redactor = self._redactor(tx)
            for request_id, status, summary, error in reports:
                try:
                    results.append(self._record_execution(tx, now, request_id, ExecutionStatus(status), summary, error,
                                                          redactor, written))  # fmt: skip
                except ClearanceError as exc:  # raised before anything of this report was written
                    results.append(exc)
        # Memory is told of these events now, as evaluate tells it of its own, so that the next
        # decision need not read them back; only when it has seen every event before them.
        if written and self.memory.learns and getattr(self.memory, "cursor", None) == written[0]["seq"] - 1:
            self.memory.ingest(written)
        return results

    def _record_execution(self, tx: SqlTx, now: datetime, request_id: str, status: ExecutionStatus,
                          result_summary: Any, error: str | None, redactor: Redactor,
                          written: list[dict[str, Any]] | None = None) -> Execution:  # fmt: skip
        result_summary = redactor.value(result_summary)
        error = redactor.text(error) if isinstance(error, str) else error
        row = tx.get_decision(request_id)
        if row is None:
            raise UnknownRequest(request_id)
        existing = tx.get_execution(request_id)
        result = DecisionResult(row["decision"]["result"])
        approval = tx.approval_for_request(request_id) if result is DecisionResult.requires_approval else None
        if executions.check_report(request_id, result=result, wanted=status, approval=approval, now=now,
                                   current=ExecutionStatus(existing["status"]) if existing else None,
                                   shadow=executions.is_shadow(row["context"])):  # fmt: skip
            return _execution(existing)  # type: ignore[arg-type]
        record = {
            "request_id": request_id, "status": status.value,
            "claimed_by": existing["claimed_by"] if existing else None,
            "claimed_at": existing["claimed_at"] if existing else None,
            "reported_at": now, "result_summary": result_summary, "error": error,
        }  # fmt: skip
        tx.put_execution(record)
        if status in NOT_RUN_STATUSES:
            tx.release_usage(request_id)
        audit.append_all(tx, [("execution.recorded", {"status": status.value, "result_summary": result_summary,
                         "error": error})], now=now, request_id=request_id, trace_id=row["trace_id"], rows_out=written)  # fmt: skip
        return _execution(record)

    def get_execution(self, request_id: str) -> Execution | None:
        with self.store.read() as tx:
            if tx.get_decision(request_id) is None:
                raise UnknownRequest(request_id)
            row = tx.get_execution(request_id)
        return _execution(row) if row else None

    # -- outcomes -------------------------------------------------------------------------
    def report_outcome(
        self,
        request_id: str,
        status: OutcomeStatus | str,
        *,
        severity: float = 0.0,
        cost: float = 0.0,
        description: str | None = None,
        observed_at: datetime | None = None,
        reported_by: str | None = None,
        event_id: str | None = None,
    ) -> Outcome:
        """Link a real-world outcome to a decision. Idempotent on ``event_id``."""
        now = self.clock()
        outcome = Outcome(
            request_id=request_id, status=OutcomeStatus(status), severity=severity, cost=cost,
            description=description, observed_at=observed_at or now, reported_by=reported_by,
            event_id=event_id or new_id("out"), recorded_at=now,
        )  # fmt: skip
        fed = False
        try:
            with self.store.write() as tx:
                existing = tx.get_outcome(outcome.event_id)
                if existing is not None:
                    if existing["request_id"] != request_id:
                        raise ConflictError(f"event id {outcome.event_id!r} is already used by an outcome of {existing['request_id']}")
                    return _outcome(existing)
                row = tx.get_decision(request_id)
                if row is None:
                    raise UnknownRequest(request_id)
                if outcome.description:
                    outcome = outcome.model_copy(update={"description": self._redactor(tx).text(outcome.description)})
                tx.insert_outcome(outcome.model_dump())
                audit.append(tx, "outcome.reported", outcome.model_dump(mode="json"), now=now,
                             request_id=request_id, trace_id=row["trace_id"])  # fmt: skip
                fed = True
                self.drift.after_outcome(tx, row, outcome.status.value, now)  # a drift alert joins the chain here
        except BaseException:
            if fed:
                self.drift.forget()  # it may have seen an outcome that did not commit: it reads the record again
            raise
        return outcome

    def outcomes(self, request_id: str) -> list[Outcome]:
        with self.store.read() as tx:
            if tx.get_decision(request_id) is None:
                raise UnknownRequest(request_id)
            return [_outcome(r) for r in tx.outcomes_for(request_id)]

    # -- approvals ------------------------------------------------------------------------
    def _expire(self, tx: SqlTx, row: dict[str, Any], now: datetime) -> None:
        if tx.set_approval_status(row["approval_id"], "pending", {"status": "expired", "resolved_at": now}):
            tx.release_usage(row["request_id"])
            decision = tx.get_decision(row["request_id"])
            audit.append(tx, "approval.expired", {"approval_id": row["approval_id"]}, now=now,
                         request_id=row["request_id"], trace_id=decision["trace_id"] if decision else None)  # fmt: skip

    def expire_approvals(self) -> list[Approval]:
        """Close every pending approval past its deadline, giving back reserved slots."""
        now = self.clock()
        with self.store.read() as tx:
            if not tx.pending_expired(now):
                return []
        with self.store.write() as tx:
            due = tx.pending_expired(now)
            for row in due:
                self._expire(tx, row, now)
            return [_approval(r, tx.votes(r["approval_id"])) for r in (tx.get_approval(d["approval_id"]) for d in due) if r]

    def list_approvals(self, status: ApprovalStatus | str | None = ApprovalStatus.pending, *, limit: int = 100) -> list[Approval]:
        """Approvals by status (``None`` for all), oldest first."""
        self.expire_approvals()
        with self.store.read() as tx:
            rows = tx.list_approvals(ApprovalStatus(status).value if status is not None else None, limit)
            return [_approval(r, tx.votes(r["approval_id"])) for r in rows]

    def get_approval(self, approval_id: str) -> Approval:
        self.expire_approvals()
        with self.store.read() as tx:
            row = tx.get_approval(approval_id)
            if row is None:
                raise NotFound(f"unknown approval id {approval_id!r}")
            return _approval(row, tx.votes(approval_id))

    def wait_approval(self, approval_id: str, *, timeout_seconds: float = 30.0) -> Approval:
        """The approval once it is no longer pending (approved, rejected or expired), or as it
        stands when ``timeout_seconds`` pass. Polls the store, so an answer given by another
        process is seen too."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            approval = self.get_approval(approval_id)
            left = deadline - time.monotonic()
            if approval.status is not ApprovalStatus.pending or left <= 0:
                return approval
            time.sleep(min(self._WAIT_POLL, left, max((approval.expires_at - self.clock()).total_seconds(), 0.0) + 0.001))

    #: How often ``wait_approval`` looks at the store.
    _WAIT_POLL = 0.05

    def watch_approvals(self, on_change: Callable[[str], None]) -> Any:
        """Call ``on_change(approval_id)`` when any process commits a change of an approval's
        status (PostgreSQL: LISTEN/NOTIFY); returns the watcher (``.stop()``, ``.listening``),
        or None where the store has no such channel (SQLite: poll it)."""
        return self.store.watch_approvals(on_change)

    def resolve_approval(
        self,
        approval_id: str,
        resolution: Literal["approved", "rejected"] | ApprovalStatus | str,
        *,
        approver: str,
        comment: str | None = None,
    ) -> Approval:
        """Record one person's answer. Of concurrent resolutions exactly one takes effect."""
        resolution = ApprovalStatus(resolution)
        if resolution not in (ApprovalStatus.approved, ApprovalStatus.rejected):
            raise ValueError("resolution must be 'approved' or 'rejected'")
        if not approver:
            raise ValueError("an approver identity is required")
        now = self.clock()
        expired = False
        with self.store.write() as tx:
            comment = self._redactor(tx).text(comment) if comment else comment
            row = tx.get_approval(approval_id)
            if row is None:
                raise NotFound(f"unknown approval id {approval_id!r}")
            if row["status"] == "pending" and row["expires_at"] <= now:
                self._expire(tx, row, now)
                expired = True
            elif row["status"] == "expired":
                raise ApprovalExpired(f"approval {approval_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC")
            elif row["status"] != "pending":
                by = f" by {row['resolved_by']}" if row["resolved_by"] else ""
                raise ApprovalNotPending(f"approval {approval_id} is already {row['status']}{by}")
            else:
                decision = tx.get_decision(row["request_id"])
                assert decision is not None
                if approver == decision["actor"]:
                    raise ConflictError(f"{approver} made this call and cannot resolve its own approval")
                votes = tx.votes(approval_id)
                if any(v["approver"] == approver for v in votes):
                    raise DuplicateVote(f"{approver} has already answered approval {approval_id}")
                tx.add_vote({"approval_id": approval_id, "approver": approver, "resolution": resolution.value,
                             "comment": comment, "at": now})  # fmt: skip
                approvals = 1 + sum(v["resolution"] == "approved" for v in votes)
                final = resolution is ApprovalStatus.rejected or approvals >= row["approvals_required"]
                ctx = {"now": now, "request_id": row["request_id"], "trace_id": decision["trace_id"]}
                if final:
                    tx.set_approval_status(approval_id, "pending", {"status": resolution.value, "resolved_at": now,
                                           "resolved_by": approver, "comment": comment})  # fmt: skip
                    if resolution is ApprovalStatus.rejected:
                        tx.release_usage(row["request_id"])
                    else:
                        tx.keep_usage(row["request_id"])
                    audit.append(tx, "approval.resolved", {"approval_id": approval_id, "resolution": resolution.value,
                                 "approver": approver, "comment": comment,
                                 "policy_version": self._rules(tx).policy_version}, **ctx)  # fmt: skip
                else:
                    audit.append(tx, "approval.voted", {"approval_id": approval_id, "resolution": resolution.value,
                                 "approver": approver, "comment": comment, "approvals": approvals,
                                 "approvals_required": row["approvals_required"]}, **ctx)  # fmt: skip
            result = _approval(tx.get_approval(approval_id) or row, tx.votes(approval_id))
        if expired:
            raise ApprovalExpired(f"approval {approval_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC")
        return result

    # -- kill switch ----------------------------------------------------------------------
    @staticmethod
    def _scope(domain: str | None, tool: str | None, actor: str | None) -> tuple[str, str]:
        given = [(s, v) for s, v in (("domain", domain), ("tool", tool), ("actor", actor)) if v is not None]
        if len(given) > 1:
            raise ValueError("a kill switch covers everything, or one domain, one tool or one actor")
        return given[0] if given else ("all", "")

    def activate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                             reason: str | None = None, by: str | None = None) -> KillSwitch:  # fmt: skip
        """Block every matching call until deactivated."""
        scope, value = self._scope(domain, tool, actor)
        now = self.clock()
        reason = self.redactor.text(reason) if reason else reason
        switch = KillSwitch(scope=scope, value=value, reason=reason, activated_by=by, activated_at=now)  # type: ignore[arg-type]
        with self.store.write() as tx:
            tx.set_kill_switch(switch.model_dump())
            audit.append(tx, "kill_switch.activated", switch.model_dump(mode="json"), now=now)
        return switch

    def deactivate_kill_switch(self, *, domain: str | None = None, tool: str | None = None, actor: str | None = None,
                               by: str | None = None) -> bool:  # fmt: skip
        scope, value = self._scope(domain, tool, actor)
        now = self.clock()
        with self.store.write() as tx:
            if not tx.clear_kill_switch(scope, value):
                return False
            audit.append(tx, "kill_switch.deactivated", {"scope": scope, "value": value, "by": by}, now=now)
        return True

    def kill_switches(self) -> list[KillSwitch]:
        with self.store.read() as tx:
            return [KillSwitch(**r) for r in tx.kill_switches()]

    @staticmethod
    def _kill_switch_for(tx: SqlTx, action: Action) -> KillSwitch | None:
        for row in tx.kill_switches():
            switch = KillSwitch(**row)
            if switch.covers(domain=action.domain, tool=action.tool, actor=action.actor):
                return switch
        return None

    # -- suspended runs -------------------------------------------------------------------
    def save_run(self, run_id: str, state: dict[str, Any], approval_ids: list[str], *, owner: str | None = None) -> None:
        """Keep a run that waits for approvals; its digest goes into the audit chain. With an
        ``owner``, the run is theirs: nobody else may save it again or release it, and its
        approvals must be of their own calls."""
        now = self.clock()
        trace_id = state["trace_id"]
        with self.store.write() as tx:
            # Sealed, not redacted: a resumed run needs its calls' real arguments back.
            state = self._redactor(tx).seal(state)
            digest = _digest(state)
            existing = tx.get_run(run_id)
            self._check_owner(existing, owner)
            for approval_id in approval_ids if owner is not None else ():
                row = tx.get_approval(approval_id)
                if row is not None and row["data"]["actor"] != owner:
                    raise NotYours(f"approval {approval_id} is of a call by {row['data']['actor']!r}, not {owner!r}")
            tx.put_run({"run_id": run_id, "trace_id": trace_id, "state": state, "digest": digest,
                        "created_at": existing["created_at"] if existing else now, "updated_at": now,
                        "leased_by": None, "leased_until": None,
                        "owner": existing["owner"] if existing else owner})  # fmt: skip
            for approval_id in approval_ids:
                tx.add_run_approval(approval_id, run_id)
            audit.append(tx, "run.suspended", {"run_id": run_id, "digest": digest, "approval_ids": approval_ids},
                         now=now, trace_id=trace_id)  # fmt: skip

    def take_run(self, approval_id: str, *, wait_seconds: float = 30.0) -> dict[str, Any]:
        """Hand out, once, the saved run that waits for ``approval_id``.

        A run goes to one resumer at a time: while another holds it (say, the other approval of
        the same turn is being resumed), this waits up to ``wait_seconds`` for it to be saved
        or released, then raises :class:`RunBusy`. A second caller for the same approval gets
        :class:`AlreadyClaimed`; a state edited in the store gets :class:`RunStateTampered`.
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            now = self.clock()
            with self.store.write() as tx:
                link = tx.run_approval(approval_id)
                if link is None:
                    raise NotFound(f"no saved run waits for approval {approval_id!r}")
                if link["consumed_at"] is not None:
                    raise AlreadyClaimed(f"the run waiting for approval {approval_id} was already resumed")
                row = tx.get_run(link["run_id"])
                if row is None:
                    raise RunStateTampered(f"run {link['run_id']} is missing from the store")
                held = row["leased_by"] is not None and row["leased_until"] is not None and row["leased_until"] > now
                if not held:
                    self._check_run(tx, row)
                    tx.consume_run_approval(approval_id, now)
                    tx.set_run_lease(row["run_id"], approval_id, now + RUN_LEASE)
                    audit.append(tx, "run.resumed", {"run_id": row["run_id"], "approval_id": approval_id}, now=now,
                                 trace_id=row["trace_id"])  # fmt: skip
                    return self.redactor.unseal(dict(row["state"]))
            if time.monotonic() >= deadline:
                raise RunBusy(f"run {row['run_id']} is being resumed by another caller (for approval {row['leased_by']})")
            time.sleep(0.05)

    def release_run(self, run_id: str, *, owner: str | None = None) -> None:
        """Let the next resumer take a run (``save_run`` releases it too)."""
        with self.store.write() as tx:
            row = tx.get_run(run_id)
            if row is not None:
                self._check_owner(row, owner)
                tx.set_run_lease(run_id, None, None)

    @staticmethod
    def _check_owner(row: dict[str, Any] | None, owner: str | None) -> None:
        if row is not None and owner is not None and row["owner"] is not None and row["owner"] != owner:
            raise NotYours(f"run {row['run_id']} was saved by {row['owner']!r}, not {owner!r}")

    @staticmethod
    def _check_run(tx: SqlTx, row: dict[str, Any]) -> None:
        run_id = row["run_id"]
        recorded = audit.latest(tx, type="run.suspended", trace_id=row["trace_id"], match={"run_id": run_id})
        if recorded is None:
            raise RunStateTampered(f"run {run_id} has no suspension in the audit trail")
        expected = audit.to_event(recorded).payload.get("digest")
        if not audit.intact(tx, recorded) or _digest(row["state"]) != row["digest"] or row["digest"] != expected:
            raise RunStateTampered(f"the saved state of run {run_id} does not match its audit record; refusing to resume")

    # -- audit ----------------------------------------------------------------------------
    def audit_events(self, *, request_id: str | None = None, trace_id: str | None = None, type: str | None = None,
                     after_seq: int = 0, limit: int = 100, since: datetime | None = None,
                     until: datetime | None = None) -> list[Event]:  # fmt: skip
        """Audit events oldest first after ``after_seq``, by request, trace or type, and
        ``since <= created_at < until``."""
        with self.store.read() as tx:
            rows = tx.query_events(request_id=request_id, trace_id=trace_id, type=type, after_seq=after_seq, limit=limit,
                                   since=_aware(since), until=_aware(until))  # fmt: skip
        return [audit.to_event(r) for r in rows]

    def refuse_proposal(self, tool: str, reason: str, *, actor: str = "anonymous", domain: str = "default",
                        trace_id: str | None = None) -> None:  # fmt: skip
        """Put a call the guard refused before any decision in the audit trail. The tool's name is
        the model's, so it is kept as one bounded line of text whatever it was."""
        now = self.clock()
        with self.store.write() as tx:
            redactor = self._redactor(tx)
            audit.append(tx, "proposal.refused", {"tool": _line(redactor.text(tool), 256),
                         "reason": _line(redactor.text(reason), 1024), "actor": actor,
                         "domain": domain}, now=now, trace_id=trace_id)  # fmt: skip

    def record_refusal(self, details: Mapping[str, Any]) -> None:
        """Put a refused request (who, what, why: the server's 401s and 403s) in the audit trail."""
        now = self.clock()
        with self.store.write() as tx:
            audit.append(tx, "auth.refused", self.redactor.value(dict(details)), now=now)

    def verify_audit(self, *, request_id: str | None = None) -> AuditReport:
        """Check the chain, the checkpoints kept in the store and the state tables against the
        chain; with ``request_id``, only that request's events hold their place in it."""
        own = [self._anchor_key.public_key()] if self._anchor_key is not None else []
        with self.store.read() as tx:
            if request_id is not None:
                return audit.check_events(tx, tx.query_events(request_id=request_id, limit=_REQUEST_EVENTS_CHECKED))
            return anchor.verify(tx, public_keys=own)

    def verify_anchor(self, checkpoint: anchor.Checkpoint | str | Path,
                      public_keys: Sequence[anchor.PublicKeySource]) -> AuditReport:  # fmt: skip
        """:meth:`verify_audit`, and proof that the store still holds the history ``checkpoint``
        (a checkpoint kept outside the store, or its file) signed, by one of ``public_keys``."""
        if not isinstance(checkpoint, anchor.Checkpoint):
            path = Path(checkpoint).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise AnchorError(f"cannot read the anchor {path}: {exc.strerror or exc}") from None
            checkpoint = anchor.Checkpoint.parse(text, source=str(path))
        with self.store.read() as tx:
            return anchor.verify(tx, anchor=checkpoint, public_keys=public_keys)

    def checkpoint_audit(self) -> anchor.Checkpoint:
        """Sign the audit chain's head now with the engine's anchor key and keep the checkpoint."""
        if self._anchor_key is None:
            raise AnchorError("this engine has no anchor key to sign with (give anchor_key, or the server "
                              "--anchor-key; make one with: clearance audit keygen)")  # fmt: skip
        now = self.clock()
        with self.store.write() as tx:
            return anchor.checkpoint(tx, self._anchor_key, now)

    def audit_checkpoints(self, *, limit: int = 20) -> list[anchor.Checkpoint]:
        """The checkpoints kept in the store, newest first (unverified: check them with a public key)."""
        with self.store.read() as tx:
            return [anchor.Checkpoint.parse(r["document"]) for r in tx.checkpoints(limit=limit, newest_first=True)]


_MISSING = object()


class _UsageAt:
    """The store's counters as the policy sees them at one instant (reservations may lapse).

    ``known`` holds answers read ahead in the same transaction (see ``usage_lookups``); any
    other question goes to the store.
    """

    def __init__(self, tx: SqlTx, now: datetime, known: Mapping[tuple[Any, ...], Any] | None = None,
                 kept: Callable[[str], str] | None = None) -> None:  # fmt: skip
        self.tx, self.now, self.known = tx, now, known or {}
        self.kept = kept  # a target as the counters keep it (redacted)

    @staticmethod
    def answers(lookups: Sequence[tuple[Any, ...]], values: Sequence[Any]) -> dict[tuple[Any, ...], Any]:
        """Answers keyed as the policy asks: a cooldown asks ``last_at(rule, actor, target)``
        and its bounded look-back (see ``usage_lookups``) gives the same verdict."""
        return {(lk[:4] if lk[0] == "last" else lk): v for lk, v in zip(lookups, values)}

    def count(self, rule_id: str, actor: str, since: datetime, cap: int | None = None) -> int:
        found = self.known.get(("count", rule_id, actor, since, cap), _MISSING)
        return self.tx.count(rule_id, actor, since, self.now, cap) if found is _MISSING else found  # type: ignore[return-value]

    def total_value(self, rule_id: str, actor: str, since: datetime) -> float:
        found = self.known.get(("total", rule_id, actor, since), _MISSING)
        return self.tx.total_value(rule_id, actor, since, self.now) if found is _MISSING else found  # type: ignore[return-value]

    def last_at(self, rule_id: str, actor: str, target: str | None) -> datetime | None:
        if target and self.kept is not None:
            target = self.kept(target)
        found = self.known.get(("last", rule_id, actor, target), _MISSING)
        return self.tx.last_at(rule_id, actor, target, self.now) if found is _MISSING else found  # type: ignore[return-value]


def _redacted(redactor: Redactor, action: Action) -> Action:
    """The copy of ``action`` that is kept: arguments, context and target redacted."""
    if not redactor.enabled:
        return action
    return action.model_copy(update={"arguments": redactor.value(action.arguments), "context": redactor.value(action.context),
                                     "target": redactor.text(action.target) if action.target else action.target})  # fmt: skip


def _serialised(stored: Action) -> tuple[str, RawJSON]:
    """The kept action's canonical JSON and its arguments' (the text the decisions row keeps and
    the audit event refers to), from one dump so that the two spell the arguments the same."""
    dump = stored.model_dump(mode="json")
    return canonical_json(dump), RawJSON(canonical_json(dump["arguments"]))


def _aware(at: datetime | None) -> datetime | None:
    """A time bound in UTC; one without a zone is read as UTC (a person typing a time range),
    and one at the very ends of the calendar that UTC cannot hold becomes that end."""
    if at is None or at.tzinfo is None:
        return None if at is None else at.replace(tzinfo=timezone.utc)
    try:
        return at.astimezone(timezone.utc)
    except OverflowError:
        return (datetime.min if at.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def _line(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters, control characters spelled out."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)[:limit]


def _digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(state).encode()).hexdigest()


def _kill_reason(switch: KillSwitch) -> str:
    what = "everything" if switch.scope == "all" else f"{switch.scope} {switch.value}"
    why = f": {switch.reason}" if switch.reason else ""
    return f"kill switch is active for {what}{why}"
