"""Group commit: concurrent callers' operations decided one after another in one transaction.

A server deciding calls one transaction at a time spends most of each decision waiting for its
own fsync, and the next caller waits behind it. :class:`BatchWriter` runs one thread that takes
every operation queued while the previous batch was committing and runs them, in arrival order,
inside one write transaction of the store (:meth:`SqlStore.batch`): each operation is a
savepoint that sees the writes of the ones before it, an operation that raises undoes only its
own writes, and the whole batch becomes durable with one commit (one fsync on SQLite). Results
are handed back only after that commit, so "durable before it returns" holds for every caller;
if the commit fails, every operation of the batch fails with that error and none of them
happened.

The operations are ordinary engine calls (``engine.evaluate``): their own ``store.write()``
joins the batch on this thread. Decisions stay sequential, so rate limits, budgets and the
audit chain are exactly what one-at-a-time calls would give.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from clearance.engine.core import Engine
from clearance.store.sql import SqlTx

__all__ = ["BatchWriter"]

log = logging.getLogger("clearance.engine")

#: An operation: runs on the writer thread, inside the batch, given the batch's transaction.
Operation = Callable[[SqlTx], Any]


class BatchWriter:
    """One writer thread deciding queued operations in batches of up to ``max_batch``.

    :meth:`submit` is called from an asyncio event loop and returns a future of that loop; the
    loop is woken once per batch, not once per operation.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 64) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: deque[tuple[Operation, asyncio.Future[Any], asyncio.AbstractEventLoop]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = self.operations = 0  # diagnostics

    def submit(self, operation: Operation) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            if self._stopping:
                raise RuntimeError("the batch writer is stopped")
            self._queue.append((operation, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clearance-batch-writer", daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()
        return future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if not self._queue:
                    return  # stopping, and nothing left to do
                n = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(n)]
            self._decide(batch)

    def _decide(self, batch: list[tuple[Operation, asyncio.Future[Any], asyncio.AbstractEventLoop]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        store = self.engine.store
        try:
            with store.batch() as tx:
                for operation, _, _ in batch:
                    try:
                        with store.write() as own:  # a savepoint: a failure undoes this one alone
                            outcomes.append((True, operation(own)))
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        outcomes.append((False, exc))
        except BaseException as exc:  # the commit (or the batch) failed: none of it happened
            log.warning("a batch of %d operations failed to commit: %s", len(batch), exc)
            outcomes = [(False, exc)] * len(batch)
            if not isinstance(exc, Exception):
                self._hand_back(batch, outcomes)
                raise
        self.batches += 1
        self.operations += len(batch)
        self._hand_back(batch, outcomes)

    @staticmethod
    def _hand_back(batch: list[tuple[Operation, asyncio.Future[Any], asyncio.AbstractEventLoop]],
                   outcomes: list[tuple[bool, Any]]) -> None:  # fmt: skip
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, future, loop), (ok, value) in zip(batch, outcomes):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():  # cancelled: the caller went away
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
