"""Secrets out of the record: what is stored, audited, logged, sent or remembered holds markers.

A secret (a Luhn-valid card number, an API key or bearer token of a common form, a JWT, a PEM
private key, the value of a field named like a secret, or a match of a configured pattern) is
replaced by ``[redacted:KIND:HASH]``, where HASH is the first 64 bits of HMAC-SHA256 of the
value under a per-store key. The same value always gives the same marker, so memory still
recognises "the same card" without the card being kept; without the key, the marker says
nothing about the value (no dictionary of card numbers can be hashed to match it).

Pure: no I/O. The engine decides on the clear values and stores what :meth:`Redactor.value`
gives. What must come back whole (a suspended run's state, a kept HTTP answer) is sealed
instead (:meth:`Redactor.seal`, Fernet under a key derived from the same secret).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clearance.model import canonical_json

__all__ = ["DEFAULT_FIELDS", "MARKER", "RedactionSettings", "Redactor", "luhn_valid", "unkeyed"]

_KIND = r"[a-z0-9_]{1,32}"
_KEYED = r"[0-9a-f]{16}"
_MARKER = rf"\[redacted:{_KIND}:{_KEYED}\]"
#: A marker as :class:`Redactor` writes it.
MARKER = re.compile(_MARKER)
_UNKEYED = re.compile(rf"(\[redacted:{_KIND}):{_KEYED}\]")


def unkeyed(text: str) -> str:
    """``text`` with each marker's keyed part dropped (``[redacted:card]``): for what must not
    depend on the store's key, such as where memory hashes a value into its vector."""
    return _UNKEYED.sub(r"\1]", text) if "[redacted:" in text else text


#: Argument names whose values are secrets whatever they look like (compared without case,
#: ``-`` or ``_``); a name that ends with one of ``_SUFFIXES`` is one too (``db_password``).
DEFAULT_FIELDS = ("password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "authorization", "auth",
                  "privatekey", "credentials", "credential", "cookie", "setcookie", "pin", "cvv", "cvc", "cvv2",
                  "otp", "sessionid", "signature")  # fmt: skip
_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey", "credentials", "cookie")

#: Field-like names in free text (``password=...``, ``"api_key": "..."``), for errors and descriptions.
_TEXT_NAMES = r"[A-Za-z0-9_-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key|credentials?)|pwd|authorization|cookie"

# The built-in detectors, one alternation so a string is scanned once. A group named like a
# kind is that kind; ``v`` inside ``kv`` and ``bearer`` is the part that is replaced.
_BUILTIN = re.compile(
    rf"(?P<marker>{_MARKER})"
    r"|(?P<private_key>-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z))"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"
    r"|(?P<bearer>\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)\s+)(?P<bv>[A-Za-z0-9\-._~+/]{8,}=*)"
    r"|(?P<kv>(?<![A-Za-z0-9])(?i:" + _TEXT_NAMES + r")[\"']?\s*[:=]\s*)"
    r"(?:\"(?P<kvq>(?:[^\"\\]|\\.){1,512})\"|'(?P<kvs>[^']{1,512})'|(?P<kvb>(?:(?:[Bb]earer|[Bb]asic)\s+)?[^\s,;}\"')\]]{1,512}))"
    r"|(?P<api_key>\b(?:sk-(?:proj-|svcacct-|admin-|ant-[a-z0-9]{2,8}-)?[A-Za-z0-9_-]{20,}"
    r"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|xox[abposre]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|glpat-[A-Za-z0-9_-]{20,})\b)"
    r"|(?P<card>(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w]|[.-]\d))",
    re.DOTALL,
)
#: What every built-in detector needs somewhere in the text: most arguments (ids, names, amounts,
#: prose) have none of it, and this is a tenth of the cost of the full scan. A test checks that
#: skipping the scan when neither matches never changes the result.
_MAYBE = re.compile(r"[:=\[]|-----|sk-|xox|glpat-|[rs]k_|gh[pousr]_|github_pat_|eyJ|earer|EARER|asic|ASIC|AKIA|ASIA|AIza")
_DIGITS = re.compile(r"\d[\d -]{11,}\d")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SEAL_PREFIX = "sealed:v1:"
_SEALED_KEY = "$sealed"


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a card number (digits only): what tells a card from other long numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@functools.lru_cache(maxsize=4096)  # argument names repeat: a call's fields are normalised once
def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class RedactionSettings(BaseModel):
    """What is redacted besides the built-in kinds. In a rules file it is the ``redaction:``
    block; the engine takes it as ``Engine(redaction=...)``; both apply together."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Off only for a store that never sees secrets.")
    fields: list[str] = Field(default_factory=list, description="More argument names whose values are secrets "
                              "(compared without case, '-' or '_').")  # fmt: skip
    patterns: dict[str, str] = Field(default_factory=dict, description="More secrets as regular expressions, by name "
                                     "(the name is the marker's kind: lower case, digits, '_').")  # fmt: skip

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not _NAME.match(name):
                raise ValueError(f"pattern name {name!r} must be 1-32 of a-z, 0-9 and '_', starting with a letter")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {name!r} is not a regular expression: {exc}") from None
            if compiled.search(""):
                raise ValueError(f"pattern {name!r} matches the empty string")
        return value

    @field_validator("fields")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _norm(name):
                raise ValueError(f"field name {name!r} has no letters or digits")
        return value

    def merged(self, other: RedactionSettings | None) -> RedactionSettings:
        if other is None:
            return self
        return RedactionSettings(enabled=self.enabled and other.enabled, fields=[*self.fields, *other.fields],
                                 patterns={**self.patterns, **other.patterns})  # fmt: skip


class Redactor:
    """Redacts values under one key and one set of settings. Thread-safe (immutable)."""

    def __init__(self, key: bytes, settings: RedactionSettings | None = None) -> None:
        if len(key) < 16:
            raise ValueError("a redaction key has at least 16 bytes")
        self.settings = settings or RedactionSettings()
        self._hash_key = hmac.new(key, b"clearance redaction hash v1", hashlib.sha256).digest()
        self._seal_key = base64.urlsafe_b64encode(hmac.new(key, b"clearance redaction seal v1", hashlib.sha256).digest())
        self._fields = frozenset(DEFAULT_FIELDS) | {_norm(f) for f in self.settings.fields}
        self._extra = [(name, re.compile(p)) for name, p in self.settings.patterns.items()]
        self.enabled = self.settings.enabled

    # -- markers ------------------------------------------------------------------------------
    def keyed_hash(self, value: str) -> str:
        """HMAC-SHA256 of ``value`` under this store's key, as hex (the marker keeps 16 digits)."""
        return hmac.new(self._hash_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def marker(self, kind: str, value: str) -> str:
        return f"[redacted:{kind}:{self.keyed_hash(value)[:16]}]"

    def secret_field(self, name: str) -> bool:
        n = _norm(name)
        return n in self._fields or n.endswith(_SUFFIXES)

    # -- redaction ----------------------------------------------------------------------------
    def text(self, text: str) -> str:
        """``text`` with every secret in it replaced by its marker (markers are left as they are)."""
        if not self.enabled or not text:
            return text
        out = _BUILTIN.sub(self._replace, text) if _MAYBE.search(text) or _DIGITS.search(text) else text
        for name, pattern in self._extra:
            out = self._apply(out, name, pattern)
        return out

    def _apply(self, text: str, kind: str, pattern: re.Pattern[str]) -> str:
        parts = MARKER.split(text) if "[redacted:" in text else [text]
        markers = MARKER.findall(text) if len(parts) > 1 else []
        done = [pattern.sub(lambda m: self.marker(kind, m.group()) if m.group() else "", p) for p in parts]
        return "".join(x for pair in zip(done, [*markers, ""]) for x in pair)

    def _replace(self, m: re.Match[str]) -> str:
        kind = m.lastgroup
        if kind == "marker":
            return m.group()
        if kind == "card":
            digits = re.sub(r"\D", "", m.group())
            return self.marker("card", digits) if 13 <= len(digits) <= 19 and luhn_valid(digits) else m.group()
        if kind == "bv":
            return m.group("bearer") + self.marker("bearer", m.group("bv"))
        if kind in ("kvq", "kvs", "kvb"):
            quote = '"' if kind == "kvq" else "'" if kind == "kvs" else ""
            return f"{m.group('kv')}{quote}{self.marker('secret', m.group(kind))}{quote}"
        return self.marker(kind or "secret", m.group())

    def value(self, value: Any, *, field: str | None = None) -> Any:
        """A copy of a JSON-like value with secrets redacted: strings scanned, and the whole
        value of a field named like a secret replaced (``None``, booleans and ``""`` kept)."""
        if not self.enabled:
            return value
        if field is not None and self.secret_field(field) and value not in (None, "", True, False):
            if isinstance(value, str) and MARKER.fullmatch(value):
                return value
            return self.marker("secret", value if isinstance(value, str) else _json(value))
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v, field=str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def holds_secrets(self, value: Any) -> bool:
        return self.enabled and self.value(value) != value

    # -- sealing ------------------------------------------------------------------------------
    def seal(self, value: dict[str, Any]) -> dict[str, Any]:
        """``value`` as it may be stored and must come back whole: unchanged when it holds no
        secret, else ``{"$sealed": token}`` (Fernet: AES-128-CBC with HMAC-SHA256)."""
        if not self.holds_secrets(value):
            return value
        return {_SEALED_KEY: self.seal_text(_json(value), force=True)[len(_SEAL_PREFIX):]}

    def unseal(self, value: dict[str, Any]) -> dict[str, Any]:
        if set(value) != {_SEALED_KEY}:
            return value
        return json.loads(self.unseal_text(_SEAL_PREFIX + value[_SEALED_KEY]))  # type: ignore[no-any-return]

    def seal_text(self, text: str, *, force: bool = False) -> str:
        """Text kept to be given back (an HTTP answer): sealed when it holds a secret."""
        if not force and (not self.enabled or self.text(text) == text):
            return text
        return _SEAL_PREFIX + _fernet(self._seal_key).encrypt(text.encode()).decode()

    def unseal_text(self, text: str) -> str:
        if not text.startswith(_SEAL_PREFIX):
            return text
        return _fernet(self._seal_key).decrypt(text[len(_SEAL_PREFIX):].encode()).decode()  # type: ignore[no-any-return]


def _json(value: Any) -> str:
    return canonical_json(value)


def _fernet(key: bytes) -> Any:
    from cryptography.fernet import Fernet  # imported when first needed: most processes never seal

    return Fernet(key)


#: A function that redacts one JSON-like value (what the engine hands to its hooks).
Redact = Callable[[Any], Any]
