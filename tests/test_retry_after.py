"""The one Retry-After reading: seconds, milliseconds, HTTP dates, and what is ignored."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from clearance.retry_after import retry_after_seconds


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
    ({"retry-after": "whenever"}, None),
    ({"retry-after": "  "}, None),
    ({}, None),
])  # fmt: skip
def test_numbers(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(httpx.Headers(headers)) == expected


def test_http_date_counts_from_now() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"Retry-After": date}), now=now) == pytest.approx(120.0)
    past = email.utils.formatdate(now - 120, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"Retry-After": past}), now=now) == 0.0


def test_no_headers() -> None:
    assert retry_after_seconds(None) is None
