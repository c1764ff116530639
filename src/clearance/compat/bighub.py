"""bighub-openai's classes on clearance: a program written for it runs by changing its import line.

    from clearance.compat.bighub import BighubOpenAI     # was: from bighub_openai import BighubOpenAI

``BighubOpenAI`` / ``AsyncBighubOpenAI`` (bighub-openai 3.x) and ``GuardedOpenAI`` /
``AsyncGuardedOpenAI`` (0.2.x) take the seed's constructor, ``bighub_api_key`` included. Where
the decisions are made follows from it:

- ``bighub_api_key`` and a server URL (``bighub_base_url=``, else ``$BIGHUB_BASE_URL``, else
  ``$CLEARANCE_URL``): a :class:`~clearance.RemoteEngine` on that ``clearance serve``, the key
  being one of its API keys;
- neither: the embedded engine (``$CLEARANCE_DB`` or ``./clearance.db``), as ``clearance`` does;
- one without the other: a ``ValueError`` saying what is missing, rather than a guess (a key
  meant for BIGHUB's hosted service must not silently fall back to a local database).

Everything else is clearance's own :class:`clearance.GuardedOpenAI`, whose options are a
superset of the seed's.
"""

from __future__ import annotations

import os
from typing import Any

from clearance.adapters.openai.guard import AsyncGuardedOpenAI as _AsyncGuard
from clearance.adapters.openai.guard import GuardedOpenAI as _Guard

__all__ = ["AsyncBighubOpenAI", "AsyncGuardedOpenAI", "BighubOpenAI", "GuardedOpenAI", "remote_engine"]

URL_VARIABLES = ("BIGHUB_BASE_URL", "CLEARANCE_URL")


def remote_engine(bighub_api_key: str | None, bighub_base_url: str | None, *, is_async: bool = False) -> Any:
    """The engine the seed's arguments name: a remote one, or None for the embedded default."""
    url = bighub_base_url or next((os.environ[v] for v in URL_VARIABLES if os.environ.get(v)), None)
    if not bighub_api_key and not url:
        return None
    if not url:
        raise ValueError("bighub_api_key is set but no clearance server is named: pass bighub_base_url= or set "
                         "BIGHUB_BASE_URL (or CLEARANCE_URL); to decide in this process, drop the key "
                         "(unset BIGHUB_API_KEY)")  # fmt: skip
    if not bighub_api_key:
        raise ValueError(f"a clearance server is named ({url}) but no API key: pass bighub_api_key= "
                         "(a key from `clearance keys create`)")  # fmt: skip
    from clearance.remote import AsyncRemoteEngine, RemoteEngine

    return (AsyncRemoteEngine if is_async else RemoteEngine)(url, bighub_api_key)


class _Compat:
    """The seed's constructor arguments, turned into an engine; the rest is GuardedOpenAI's."""

    _is_async = False
    _owned: Any = None

    def __init__(self, openai_api_key: str | None = None, *, bighub_api_key: str | None = None,
                 bighub_base_url: str | None = None, **kw: Any) -> None:  # fmt: skip
        if kw.get("engine") is None:
            engine = remote_engine(bighub_api_key, bighub_base_url, is_async=self._is_async)
            if engine is not None:
                kw["engine"] = self._owned = engine
        elif bighub_api_key or bighub_base_url:
            raise ValueError("give engine= or bighub_api_key= / bighub_base_url=, not both")
        super().__init__(openai_api_key, **kw)  # type: ignore[call-arg]


class BighubOpenAI(_Compat, _Guard):
    """bighub-openai's ``BighubOpenAI``: :class:`clearance.GuardedOpenAI` with the seed's constructor."""

    def close(self) -> None:
        super().close()
        if self._owned is not None:
            self._owned.close()


class AsyncBighubOpenAI(_Compat, _AsyncGuard):
    """bighub-openai's ``AsyncBighubOpenAI``: :class:`clearance.AsyncGuardedOpenAI` with the seed's constructor."""

    _is_async = True

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.aclose()


#: bighub-openai 0.2.x's names for the same classes.
GuardedOpenAI = BighubOpenAI
AsyncGuardedOpenAI = AsyncBighubOpenAI
