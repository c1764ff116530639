"""What a tool call looks like to memory: a fixed-width vector that generalises beyond names.

Exact identifiers (an IBAN, an e-mail address) rarely repeat between attacks, so a vector of
identifiers would find no precedent for the next one. What does repeat is the *shape* of the
call relative to what this deployment has seen: a recipient never seen in a successful call,
an e-mail domain nobody wrote to before, a value far above this actor's usual, an argument
combination this tool never had. Those are the first dimensions of the vector; hashed argument
tokens and the actor follow, so that among calls of the same shape the closest in content come
first.

The features of a call depend on what was known when it was decided. :class:`Featuriser`
keeps that knowledge and is fed in event order, so replaying the audit log rebuilds exactly the
vectors the live engine computed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from clearance.model import Action
from clearance.redaction import unkeyed

__all__ = ["DIM", "Featuriser", "Profile", "identifiers"]

#: Width of the vectors memory indexes.
DIM = 48
_HASHED_ARGS = slice(12, 44)  # 32 dimensions of signed feature hashing over argument tokens
_HASHED_ACTOR = slice(44, 48)

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b")
URL = re.compile(r"\b(?:https?://)?(?:www\.)?((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?:[/:?#]\S*)?", re.IGNORECASE)
PHONE = re.compile(r"(?<!\w)(?<!\d\.)\+?\d[\d ()-]{7,}\d(?!\w|\.\d)")
#: Dates and times look like phone numbers to PHONE; they are taken out of a text first.
DATETIME = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\b|\b\d{1,2}:\d{2}(?::\d{2})?\b")
#: Argument names whose short free-text values name a counterparty.
PARTY_KEYS = re.compile(r"(recipient|to|user|email|account|iban|payee|customer|card|payment_method|target|url|channel)",
                        re.IGNORECASE)  # fmt: skip
_DIGIT = re.compile(r"\d")
_NON_DIGIT = re.compile(r"\D")


def _leaves(obj: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, str(k))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v, key)
    else:
        yield key, obj


def identifiers(arguments: dict[str, Any], target: str | None = None) -> set[tuple[str, str]]:
    """Counterparty-like tokens of a call, as ``(kind, token)``: e-mail addresses and their
    domains, IBANs, URL hosts, phone numbers, and short values of counterparty-named arguments."""
    return _identifiers_in(list(_leaves(arguments)), target)


def _identifiers_in(leaves: list[tuple[str, Any]], target: str | None) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    texts = [(k, v) for k, v in leaves if isinstance(v, str)]
    if target:
        texts.append(("target", target))
    for key, text in texts:
        found = False
        rest = text
        # Each pattern is tried only where it could match: most argument values are short
        # words or ids, and this runs on every decision.
        if "@" in rest:
            for m in EMAIL.finditer(rest):
                out.add(("email", m.group(0).lower()))
                out.add(("email_domain", m.group(1).lower()))
                found = True
            rest = EMAIL.sub(" ", rest)
        if len(rest) >= 14:  # the shortest IBAN
            ibans = IBAN.findall(rest)
            if ibans:
                out.update(("iban", iban) for iban in ibans)
                found = True
                rest = IBAN.sub(" ", rest)
        if "." in rest:
            for host in URL.findall(rest):
                if not host.replace(".", "").isdigit():
                    out.add(("host", host.lower()))
                    found = True
        if len(rest) >= 9 and _DIGIT.search(rest):  # the shortest PHONE match
            for phone in PHONE.findall(DATETIME.sub(" ", rest)):
                digits = _NON_DIGIT.sub("", phone)
                if 7 <= len(digits) <= 15:  # E.164 numbers have at most 15 digits
                    out.add(("phone", digits))
                    found = True
        if not found and len(text) <= 64 and PARTY_KEYS.search(key):
            out.add(("party", text.strip().lower()))
    return out


def _h(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


class _Stats:
    """Running mean and variance of log values (Welford)."""

    __slots__ = ("m2", "mean", "n")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    def z(self, x: float) -> float:
        if self.n < 3:
            return 0.0
        sd = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return max(-5.0, min(5.0, (x - self.mean) / max(sd, 0.25)))


@dataclass(frozen=True)
class Profile:
    """The salient, human-readable facts behind a vector; explanations are built from these.
    It also carries the call taken apart (identifiers, argument names, tokens), so whoever
    feeds the same call back (:meth:`Featuriser.observe_call`, case memory) need not redo it."""

    novel_ids: tuple[str, ...]  # kinds of counterparties never seen in a call that went well
    bad_ids: tuple[str, ...]  # kinds of counterparties seen in a call that went badly
    value_z_tool: float
    value_z_actor: float
    rare_arguments: bool
    #: Every identifier of the call, as :func:`identifiers` gives them.
    ids: frozenset[tuple[str, str]] = frozenset()
    keys: frozenset[str] = frozenset()  # the argument names
    tokens: tuple[str, ...] = ()  # the argument tokens (see Featuriser._tokens)


_ID_LIMIT = 200_000  # identifiers remembered per label
_TOKEN_LIMIT = 200_000  # argument tokens remembered per tool (ids, free text: most are seen once)


def _bound(counter: Counter[Any], limit: int) -> None:
    """Past ``limit`` entries, forget the least seen half, so memory stays bounded."""
    if len(counter) > limit:
        for key, _ in counter.most_common()[limit // 2 :]:
            del counter[key]


class Featuriser:
    """Knowledge of what went well and badly, and the vectors it gives calls."""

    def __init__(self) -> None:
        self.good_ids: Counter[tuple[str, str]] = Counter()
        self.bad_ids: Counter[tuple[str, str]] = Counter()
        self.tool_values: dict[str, _Stats] = defaultdict(_Stats)
        self.actor_values: dict[tuple[str, str], _Stats] = defaultdict(_Stats)
        self.keysets: dict[str, Counter[frozenset[str]]] = defaultdict(Counter)
        self.tokens: dict[str, Counter[str]] = defaultdict(Counter)
        self.calls: Counter[str] = Counter()

    # -- vectors ------------------------------------------------------------------------------
    def vector(self, action: Action) -> tuple[list[float], Profile]:
        leaves = list(_leaves(action.arguments))  # walked once; identifiers, keys and tokens come from it
        # The target's identifiers on their own too (v[10]); with the arguments', they are all of them.
        target_ids = _identifiers_in([], action.target) if action.target else set()
        ids = _identifiers_in(leaves, None) | target_ids
        good, bad_ids = self.good_ids, self.bad_ids  # .get: a Counter's missing keys cost a call each
        party = [i for i in ids if i[0] != "email_domain"]
        novel = [i for i in party if i not in good]
        bad = [i for i in ids if bad_ids.get(i, 0) > good.get(i, 0)]
        domains = [i for i in ids if i[0] in ("email_domain", "host")]
        novel_domains = [i for i in domains if i not in good]
        logv = math.log1p(max(action.value or 0.0, 0.0))
        z_tool = self.tool_values[action.tool].z(logv) if action.value is not None else 0.0
        z_actor = self.actor_values[(action.actor, action.tool)].z(logv) if action.value is not None else 0.0
        calls = self.calls[action.tool]
        keys = frozenset(k for k, _ in leaves)
        keyset_rarity = 1.0 - self.keysets[action.tool].get(keys, 0) / calls if calls else 0.0
        toks = list(self._tokens(leaves))
        seen = self.tokens[action.tool]
        token_rarity = sum(1.0 for t in toks if t not in seen) / len(toks) if toks and calls else 0.0

        v = [0.0] * DIM
        v[0] = logv / 8.0
        v[1] = z_tool / 3.0
        v[2] = z_actor / 3.0
        v[3] = 1.5 * (len(novel) / len(party) if party else 0.0)
        v[4] = 2.0 * float(bool(bad))
        v[5] = min(len(bad), 3) / 3.0
        v[6] = len(novel_domains) / len(domains) if domains else 0.0
        v[7] = 0.5 * min(len(party), 5) / 5.0
        v[8] = 0.5 * keyset_rarity
        v[9] = 0.5 * token_rarity
        v[10] = float(bool(action.target) and ("party", action.target.strip().lower()) not in good
                      and not any(i in good for i in target_ids))  # fmt: skip
        v[11] = 0.5 * float(self.actor_values[(action.actor, action.tool)].n < 3)
        # A redaction marker's keyed part is the store's secret: the same history must give the same
        # vector under any key. Memory still tells one card from another by the whole token, in
        # its sets of seen values.
        self._hash_into(v, _HASHED_ARGS, [unkeyed(t) for t in toks], 0.5)
        self._hash_into(v, _HASHED_ACTOR, [f"actor={action.actor}"], 0.25)
        profile = Profile(
            novel_ids=tuple(sorted({k for k, _ in novel})),
            bad_ids=tuple(sorted({k for k, _ in bad})),
            value_z_tool=z_tool,
            value_z_actor=z_actor,
            rare_arguments=keyset_rarity > 0.9 and calls >= 20,
            ids=frozenset(ids),
            keys=keys,
            tokens=tuple(toks),
        )
        return v, profile

    @staticmethod
    def _tokens(leaves: Iterable[tuple[str, Any]]) -> Iterator[str]:
        for key, value in leaves:
            if isinstance(value, bool) or value is None:
                yield f"{key}={value}"
            elif isinstance(value, (int, float)):
                # Numbers by order of magnitude, so 120 and 130 look alike and 12,000 does not.
                yield f"{key}~{int(math.log10(abs(value) + 1) * 2)}"
            else:
                text = str(value)
                yield f"{key}={text.lower()}" if len(text) <= 64 else f"{key}:len{int(math.log2(len(text)))}"

    @staticmethod
    def _hash_into(v: list[float], where: slice, tokens: list[str], norm: float) -> None:
        if not tokens:
            return
        width = where.stop - where.start
        acc: dict[int, float] = {}  # the buckets touched (the others stay 0.0 in v)
        for t in tokens:
            # Two buckets per token: two values of one argument rarely collide in both.
            h = _h(t)
            i, j = h % width, (h >> 16) % width
            acc[i] = acc.get(i, 0.0) + (1.0 if (h >> 32) & 1 else -1.0)
            acc[j] = acc.get(j, 0.0) + (1.0 if (h >> 33) & 1 else -1.0)
        length = math.sqrt(sum(x * x for x in acc.values())) or 1.0
        for i, x in acc.items():
            v[where.start + i] = norm * x / length

    # -- learning -----------------------------------------------------------------------------
    def observe_call(self, action: Action, profile: Profile) -> None:
        """A call was decided: its shape becomes part of this tool's and actor's history.
        ``profile`` is this call's from :meth:`vector`, which has taken the arguments apart."""
        self.calls[action.tool] += 1
        self.keysets[action.tool][profile.keys] += 1
        seen = self.tokens[action.tool]
        seen.update(set(profile.tokens))
        _bound(seen, _TOKEN_LIMIT)
        if action.value is not None:
            self.actor_values[(action.actor, action.tool)].add(math.log1p(max(action.value, 0.0)))

    def observe_label(self, tool: str, ids: Iterable[tuple[str, str]], value: float | None, *, bad: bool) -> None:
        """A call's outcome is known: its counterparties (from :func:`identifiers`) become
        known good or known bad, and a good call's value joins its tool's usual range."""
        known = self.bad_ids if bad else self.good_ids
        known.update(ids)
        _bound(known, _ID_LIMIT)
        if not bad and value is not None:
            self.tool_values[tool].add(math.log1p(max(value, 0.0)))
