"""One webhook signature for everything clearance POSTs (approval events from the server, calls
handed to a dispatch webhook): Standard Webhooks (https://www.standardwebhooks.com), signed and
verified by its own library so that any Standard Webhooks receiver can check us.

Each request carries ``webhook-id`` (the same on every retry of one message: drop repeats by
it), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256
of "{id}.{timestamp}.{body}">``). The library refuses a timestamp more than 5 minutes from now.

A secret is either the standard form, ``whsec_<base64 key>``, or any other string, whose UTF-8
bytes are the key (so plain ``CLEARANCE_WEBHOOK_SECRET`` and dispatch secrets keep working).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

__all__ = ["HEADERS", "WebhookSignatureError", "signed_headers", "verify"]

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookSignatureError(WebhookVerificationError, ValueError):
    """A webhook request was refused: a header is missing, the timestamp is stale, or no signature
    matches (wrong secret, or the body was altered)."""


def _webhook(secret: str | bytes) -> Webhook:
    if not secret:
        raise ValueError("a webhook secret may not be empty")
    if isinstance(secret, str) and not secret.startswith("whsec_"):
        secret = secret.encode()
    try:
        return Webhook(secret)
    except (ValueError, EmptyWebhookSecretError) as exc:  # binascii.Error: a whsec_ secret that is not base64
        raise ValueError(f"a whsec_ secret must be a non-empty base64 key after the prefix: {exc}") from None


def signed_headers(secret: str | bytes, msg_id: str, body: bytes | str, *, timestamp: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at sending ``body`` (sign each attempt
    anew, with the same ``msg_id``). ``timestamp`` (Unix seconds) defaults to now."""
    when = datetime.now(timezone.utc) if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)
    signature = _webhook(secret).sign(msg_id, when, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}


def verify(secret: str | bytes, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """Check a request's signature on its raw body, as received (before parsing it); returns the
    parsed JSON body. ``headers`` is any mapping of the request's headers (case does not matter).
    Raises :class:`WebhookSignatureError` saying why a request is refused."""
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in HEADERS if not lowered.get(h)]
    if missing:
        raise WebhookSignatureError(f"not a signed webhook request: no {', '.join(missing)} header")
    try:
        return _webhook(secret).verify(body, lowered)
    except WebhookVerificationError as exc:
        hint = " (the wrong secret, or the body was altered)" if "signature" in str(exc) else ""
        raise WebhookSignatureError(f"webhook {lowered['webhook-id']!r} refused: {exc}{hint}") from None
