"""An audit event's body: the canonical JSON of its fields, the payload wrapped in an envelope
(ids, type, time, seq, versions) that the events row also keeps in columns.

Here, below the engine, because the store rebuilds the envelope of a lean ``decision.made``
row from its columns instead of keeping it twice (see ``transaction._lean``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from clearance._version import __version__
from clearance.model import RawJSON, canonical_json

SCHEMA_VERSION = 1
SOURCE_VERSION = f"clearance@{__version__}"
_SCHEMA_FIELD = f'"schema_version":{canonical_json(SCHEMA_VERSION)},'  # the same in every event body
_SOURCE_FIELD = f'"source_version":{canonical_json(SOURCE_VERSION)},'


def event_body(*, event_id: str, seq: int, trace_id: str | None, request_id: str | None, type: str,
               created_at: str, payload: dict[str, Any] | RawJSON,
               source_version: str = SOURCE_VERSION) -> str:  # fmt: skip
    """The canonical JSON of an event, exactly ``canonical_json`` of its fields, assembled
    around a payload that may be canonical JSON already."""
    p = payload if isinstance(payload, RawJSON) else canonical_json(payload)
    c = canonical_json
    source = _SOURCE_FIELD if source_version == SOURCE_VERSION else f'"source_version":{c(source_version)},'
    # The keys in sorted order, as canonical_json writes them.
    return (f'{{"created_at":{c(created_at)},"event_id":{c(event_id)},"payload":{p},"request_id":{c(request_id)},'
            f'{_SCHEMA_FIELD}"seq":{c(seq)},{source}"trace_id":{c(trace_id)},"type":{c(type)}}}')


def envelope(row: dict[str, Any], source_version: str) -> tuple[str, str]:
    """The text before and after the payload in the body of the event ``row`` (its columns),
    with its ``created_at`` spelled as a UTC instant, as the engine writes it."""
    created: datetime = row["created_at"]
    created_text = created.astimezone(timezone.utc).isoformat()
    whole = event_body(event_id=row["event_id"], seq=row["seq"], trace_id=row["trace_id"], request_id=row["request_id"],
                       type=row["type"], created_at=created_text, payload=RawJSON("\0"), source_version=source_version)  # fmt: skip
    before, _, after = whole.partition("\0")
    return before, after
