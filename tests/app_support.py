"""The server's app in this process, reached without a socket: :class:`InProcessApp`.

The app is ``clearance.server.create_app(engine)``, the same one ``clearance serve`` runs. It
lives on an event loop of its own in a daemon thread, with its lifespan run there as a server
would run it (memory warmed, background work started, and at the end stopped). Requests reach
it through ``httpx.ASGITransport``, always on that loop (the app keeps its loop for waking
long-polls, so every request must run where the lifespan ran):

- :meth:`InProcessApp.transport` is a blocking ``httpx.BaseTransport`` for :class:`RemoteEngine`
  (and ``httpx.Client``): each request is handed to the app's loop and waited for;
- :meth:`InProcessApp.async_transport` is an ``httpx.AsyncBaseTransport`` for
  :class:`AsyncRemoteEngine`: the same hand-over, awaited from the caller's loop.

Only public interfaces are used: the ASGI lifespan protocol, ``httpx.ASGITransport`` and
httpx's transport base classes. ``httpx.ASGITransport`` answers once the app has finished the
response (no streaming), which is all the engine clients need.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import httpx

from clearance import Engine
from clearance.remote import AsyncRemoteEngine, RemoteEngine

__all__ = ["InProcessApp", "InProcessRemoteEngine"]

T = TypeVar("T")

#: The base URL the clients use; nothing listens there, the transport answers instead.
URL = "http://clearance.test"


class InProcessApp:
    """``create_app(engine)`` on its own event loop in a thread, lifespan run; see the module doc.

    The caller owns ``engine`` (the app does not close it); :meth:`stop` runs the lifespan's
    shutdown and ends the thread.
    """

    def __init__(self, engine: Engine, **app_kw: Any) -> None:
        from clearance.server import create_app

        self.app = create_app(engine, **app_kw)
        self.url = URL
        self._asgi = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)  # a 500, as a server answers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="clearance-app")
        self._lifespan: asyncio.Future[Any] | None = None
        self._to_app: asyncio.Queue[dict[str, Any]] | None = None
        self._from_app: asyncio.Queue[dict[str, Any]] | None = None

    # -- running it --------------------------------------------------------------------------
    def start(self) -> InProcessApp:
        self._thread.start()
        self.call(self._startup(), timeout=60)
        return self

    def stop(self) -> None:
        try:
            if self._lifespan is not None:
                self.call(self._shutdown(), timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> InProcessApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the app's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _startup(self) -> None:
        """The ASGI lifespan protocol, as uvicorn speaks it: ``lifespan.startup`` and its answer."""
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._lifespan = asyncio.ensure_future(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._next_message()
        if answer["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app did not start: {answer}")

    async def _shutdown(self) -> None:
        assert self._to_app is not None and self._lifespan is not None
        await self._to_app.put({"type": "lifespan.shutdown"})
        answer = await self._next_message()
        await self._lifespan
        if answer["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"the app did not shut down cleanly: {answer}")

    async def _next_message(self) -> dict[str, Any]:
        """The app's next lifespan message, or its exception if the lifespan task ended instead."""
        assert self._from_app is not None and self._lifespan is not None
        message = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({message, self._lifespan}, return_when=asyncio.FIRST_COMPLETED)
        if not message.done():
            message.cancel()
            self._lifespan.result()  # raises what ended the lifespan
            raise RuntimeError("the app's lifespan ended without answering")
        return message.result()

    # -- reaching it ---------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        """One request through ``httpx.ASGITransport`` (on the app's loop), its body read."""
        response = await self._asgi.handle_async_request(request)
        try:
            content = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        finally:
            await response.aclose()
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              extensions=response.extensions)  # fmt: skip

    def transport(self) -> httpx.BaseTransport:
        return _BlockingTransport(self)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        return _AsyncTransport(self)


def _detached(request: httpx.Request, content: bytes) -> httpx.Request:
    """The same request with its body in memory, so the app's loop can read it."""
    return httpx.Request(request.method, request.url, headers=request.headers, content=content,
                         extensions=request.extensions)  # fmt: skip


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    return timeout.get("read")  # type: ignore[no-any-return]


class _BlockingTransport(httpx.BaseTransport):
    """``httpx.BaseTransport`` for blocking clients: the request runs on the app's loop while the
    caller's thread waits, as long as the request's read timeout allows (then ``ReadTimeout``)."""

    def __init__(self, app: InProcessApp) -> None:
        self._app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(self._app.handle(_detached(request, request.read())), self._app._loop)
        try:
            return future.result(_read_timeout(request))
        except FutureTimeout:
            future.cancel()
            raise httpx.ReadTimeout("the in-process app did not answer in time", request=request) from None


class _AsyncTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` for asyncio clients on any loop: the request runs on the app's
    loop and the caller awaits it (the read timeout applies as on a socket)."""

    def __init__(self, app: InProcessApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        future = asyncio.run_coroutine_threadsafe(self._app.handle(_detached(request, content)), self._app._loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), _read_timeout(request))
        except asyncio.TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout("the in-process app did not answer in time", request=request) from None


class InProcessRemoteEngine(RemoteEngine):
    """A :class:`RemoteEngine` over an :class:`InProcessApp`: every call goes through the client's
    real code (request building, retries, error decoding) and the app's real routes; only the
    socket is left out. Its :meth:`aio` twin reaches the same app through the async transport."""

    def __init__(self, app: InProcessApp, api_key: str, **kw: Any) -> None:
        super().__init__(app.url, api_key, transport=app.transport(), **kw)
        self.app = app

    def aio(self) -> AsyncRemoteEngine:
        return AsyncRemoteEngine(self.url, self._api_key, transport=self.app.async_transport(),
                                 **self._options)  # type: ignore[arg-type]  # fmt: skip
