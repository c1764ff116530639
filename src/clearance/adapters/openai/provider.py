"""Which OpenAI a guard talks to: OpenAI's own API, or Azure OpenAI.

Azure is chosen when an Azure endpoint is given or found in the environment
(``AZURE_OPENAI_ENDPOINT``, or ``AZURE_ENDPOINT`` as openai-chat-engram reads it); otherwise
OpenAI. Two Azure URL styles exist, and both work for the Responses and Chat paths:

- classic deployment URLs (``/openai/deployments/{deployment}/...?api-version=...``), through
  the SDK's ``AzureOpenAI`` client; ``api_version`` defaults to ``2024-06-01`` as in the engram;
- the v1 API (``{endpoint}/openai/v1/``, no ``api-version``), through the plain ``OpenAI``
  client, chosen with ``api_version="v1"`` or an endpoint that already ends in ``/openai/v1``.

Credentials: an API key (``api-key`` header on classic URLs), or a Microsoft Entra ID token
provider (``Authorization: Bearer``), a callable returning a token.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

__all__ = ["DEFAULT_AZURE_API_VERSION", "AzureSettings", "make_client"]

DEFAULT_AZURE_API_VERSION = "2024-06-01"


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True)
class AzureSettings:
    endpoint: str
    api_version: str
    deployment: str | None
    api_key: str | None
    token_provider: Callable[[], Any] | None

    @property
    def v1(self) -> bool:
        return self.api_version == "v1" or self.endpoint.rstrip("/").endswith("/openai/v1")

    @property
    def v1_base_url(self) -> str:
        base = self.endpoint.rstrip("/")
        return base + "/" if base.endswith("/openai/v1") else base + "/openai/v1/"

    @classmethod
    def resolve(cls, *, endpoint: str | None, api_version: str | None, deployment: str | None, api_key: str | None,
                token_provider: Callable[[], Any] | None) -> AzureSettings | None:  # fmt: skip
        """The Azure settings from arguments, then the environment; None means OpenAI itself."""
        endpoint = endpoint or _env("AZURE_OPENAI_ENDPOINT", "AZURE_ENDPOINT")
        if not endpoint:
            return None
        key = api_key or (None if token_provider else _env("AZURE_OPENAI_API_KEY", "AZURE_API_KEY"))
        if not key and token_provider is None:
            raise ValueError("Azure OpenAI needs an API key (openai_api_key=, AZURE_OPENAI_API_KEY or AZURE_API_KEY) "
                             "or azure_ad_token_provider=")  # fmt: skip
        return cls(
            endpoint=endpoint,
            api_version=api_version or _env("AZURE_OPENAI_API_VERSION", "AZURE_API_VERSION", "OPENAI_API_VERSION")
            or DEFAULT_AZURE_API_VERSION,
            deployment=deployment or _env("AZURE_OPENAI_DEPLOYMENT", "AZURE_DEPLOYMENT"),
            api_key=key,
            token_provider=token_provider,
        )


def _async_provider(provider: Callable[[], Any]) -> Callable[[], Any]:
    """The async OpenAI client awaits its key provider; accept a plain callable too."""

    async def token() -> str:
        value = provider()
        return await value if inspect.isawaitable(value) else value  # type: ignore[no-any-return]

    return token


def make_client(*, is_async: bool, api_key: str | None, base_url: str | None, azure: AzureSettings | None) -> Any:
    """A new SDK client for OpenAI or Azure OpenAI."""
    if azure is None:
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(api_key=api_key, base_url=base_url)
    if azure.v1:
        key: Any = azure.api_key
        if key is None and azure.token_provider is not None:
            key = _async_provider(azure.token_provider) if is_async else azure.token_provider
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(api_key=key, base_url=azure.v1_base_url)
    azure_cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
    # No azure_deployment here: the SDK puts a deployment named by the request's ``model`` into
    # the URL of the endpoints that have one (chat/completions), and openai 2.x would also put a
    # client-wide deployment into /responses, where Azure has none. The deployment is the model.
    return azure_cls(azure_endpoint=azure.endpoint, api_version=azure.api_version, api_key=azure.api_key,
                     azure_ad_token_provider=azure.token_provider)  # fmt: skip
