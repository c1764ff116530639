"""One reading of ``Retry-After`` for every HTTP client here (the OpenAI adapter, the remote
engine, the webhook sender): how many seconds a server asked us to wait.

``retry-after-ms`` (OpenAI's header, milliseconds) is read first, then ``Retry-After`` as
delay-seconds or an HTTP date (RFC 9110, section 10.2.3). A value that is neither is ignored,
so the caller falls back to its own backoff.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import timezone

__all__ = ["retry_after_seconds"]


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait (never negative), or None when the headers ask for nothing readable.
    ``headers`` is any mapping with case-insensitive lookup (httpx's, Starlette's) or lower-case keys."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None or not raw.strip():
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
