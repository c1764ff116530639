"""The engine for asyncio code: the same operations, run in worker threads.

Database work blocks; running it in a thread keeps the event loop free while a decision commits.
The sync :class:`Engine` stays the one implementation; every operation of the contract
(:mod:`clearance.engine.contract`) is derived from it here.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from clearance.engine.contract import AsyncEngineAPI, derive
from clearance.engine.core import Engine

__all__ = ["AsyncEngine"]


class AsyncEngine(AsyncEngineAPI):
    def __init__(self, engine: Engine | None = None, **kw: Any) -> None:
        self.sync = engine if engine is not None else Engine(**kw)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _threaded(name: str, signature: inspect.Signature) -> Callable[..., Any]:
    async def call(self: AsyncEngine, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    return call


derive(AsyncEngine, _threaded, is_async=True)
