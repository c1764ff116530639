"""The real ``openai`` SDK, set up for tests: clients on a :class:`ScriptedOpenAI`, and a request
of the SDK's own HTTP library for building its exceptions."""

from __future__ import annotations

from typing import Any

import openai
from openai import AsyncOpenAI, OpenAI

from clearance.testing import ScriptedOpenAI

__all__ = ["aclient", "client", "sdk_request"]


def client(server: ScriptedOpenAI, **kwargs: Any) -> OpenAI:
    """A client on ``server`` that does not retry and checks every body with the SDK's own types."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 10)
    return OpenAI(base_url=server.base_url, api_key="test", _strict_response_validation=True, **kwargs)


def aclient(server: ScriptedOpenAI, **kwargs: Any) -> AsyncOpenAI:
    """The asyncio twin of :func:`client`."""
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 10)
    return AsyncOpenAI(base_url=server.base_url, api_key="test", _strict_response_validation=True, **kwargs)


def sdk_request(method: str = "POST", url: str = "https://api.openai.com/v1/responses") -> Any:
    """A request as the openai SDK's exceptions carry it, built by the SDK's public HTTP client class
    (``openai.DefaultHttpxClient``), so it is of the SDK's own HTTP library on every line
    (``httpx`` on 2.x, ``httpx2`` on 3.x): for building ``openai.APIError`` and its kin in a test."""
    with openai.DefaultHttpxClient() as http:
        return http.build_request(method, url)
