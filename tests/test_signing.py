"""The one webhook signature (clearance.signing): Standard Webhooks, checked against the
``standardwebhooks`` library itself, with both forms of secret and every reason to refuse."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from clearance.server.webhooks import WebhookSettings
from clearance.signing import WebhookSignatureError, signed_headers, verify

BODY = b'{"id":"whd_x","type":"approval.requested"}'
STANDARD = "whsec_" + base64.b64encode(b"a 24-byte signing key!!!").decode()


@pytest.mark.parametrize("secret", [STANDARD, "a plain string secret"])
def test_signed_headers_verify_with_ours_and_with_the_library(secret: str) -> None:
    headers = signed_headers(secret, "msg_1", BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1" and headers["webhook-signature"].startswith("v1,")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert verify(secret, BODY, headers) == {"id": "whd_x", "type": "approval.requested"}
    assert verify(secret, BODY.decode(), {k.upper(): v for k, v in headers.items()})  # str bodies, any header case
    library_secret = secret if secret.startswith("whsec_") else secret.encode()
    assert Webhook(library_secret).verify(BODY, headers)


def test_a_plain_secret_is_its_utf8_bytes_as_the_key() -> None:
    """What a receiver on another stack configures: whsec_ + base64 of the plain secret."""
    headers = signed_headers("s3cret", "msg_2", BODY)
    assert Webhook("whsec_" + base64.b64encode(b"s3cret").decode()).verify(BODY, headers)
    assert verify("whsec_" + base64.b64encode(b"s3cret").decode(), BODY, headers)


def test_the_library_signs_what_we_verify() -> None:
    when = time.time()
    signature = Webhook(STANDARD).sign("msg_3", datetime.fromtimestamp(when, timezone.utc), BODY)
    headers = {"webhook-id": "msg_3", "webhook-timestamp": str(int(when)), "webhook-signature": signature}
    assert verify(STANDARD, BODY, headers)


def test_refusals_say_why() -> None:
    headers = signed_headers(STANDARD, "msg_4", BODY)
    with pytest.raises(WebhookSignatureError, match="body was altered"):
        verify(STANDARD, BODY.replace(b"requested", b"resolved"), headers)
    with pytest.raises(WebhookSignatureError, match="wrong secret"):
        verify("whsec_" + base64.b64encode(b"another key").decode(), BODY, headers)
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify(STANDARD, BODY, signed_headers(STANDARD, "msg_4", BODY, timestamp=time.time() - 301))
    with pytest.raises(WebhookSignatureError, match="too new"):
        verify(STANDARD, BODY, signed_headers(STANDARD, "msg_4", BODY, timestamp=time.time() + 301))
    assert verify(STANDARD, BODY, signed_headers(STANDARD, "msg_4", BODY, timestamp=time.time() - 290))
    forged = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    with pytest.raises(WebhookSignatureError, match="No matching signature"):
        verify(STANDARD, BODY, forged)  # a fresher timestamp breaks the signature
    with pytest.raises(WebhookSignatureError, match="No matching signature"):
        verify(STANDARD, BODY, {**headers, "webhook-id": "msg_5"})  # so does another id
    for name in headers:
        with pytest.raises(WebhookSignatureError, match=f"no {name} header"):
            verify(STANDARD, BODY, {k: v for k, v in headers.items() if k != name})
    with pytest.raises(WebhookVerificationError):  # receivers catching the library's error catch ours
        verify(STANDARD, BODY, {})
    rotated = {**headers, "webhook-signature": f"v1,{base64.b64encode(b'0' * 32).decode()} {headers['webhook-signature']}"}
    assert verify(STANDARD, BODY, rotated)  # several signatures (a secret being rotated): any one may match


def test_bad_secrets_are_refused_up_front() -> None:
    for bad in ("", "whsec_", "whsec_abcde"):
        with pytest.raises(ValueError, match="secret"):
            signed_headers(bad, "m", BODY)
        with pytest.raises(ValueError, match="secret"):
            WebhookSettings(urls=("http://a.example/",), secret=bad)
