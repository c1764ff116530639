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

With ``overlap_sync=True`` (on a SQLite file) the fsync of a batch overlaps the deciding of the
next: the batch commits without waiting for the disk (``store.batch(sync=False)``), a second
thread fsyncs the WAL (:meth:`SqlStore.sync`, one fsync for every batch committed before it
began) and only then hands the batch's results back. So "durable before it returns" still
holds for every caller; what changes is that the writer thread no longer sits idle through
each fsync. (This process's readers wait for the fsync too; another process reading the file
may see a batch up to one fsync before it is durable.) If that fsync fails, the operations
of those batches that succeeded fail with :class:`NotDurable`: they were committed, so they
must not be run again, but nobody can say they survived.

With ``inline=True`` as well (only where commits need not wait for the disk), batches are
decided on the submitting event loop's own thread, once it has run what was ready, instead of
on the writer thread. A decision is Python work either way, and two threads deciding and
serving HTTP take turns on one GIL: every statement the writer thread runs releases the GIL,
and getting it back means waiting for the loop's turn to end. On the loop's thread nothing
waits for that. The loop never waits for a lock: when another writer holds the store, the
batch goes to the writer thread, which waits for it instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from clearance.engine.core import Engine
from clearance.store import SqlTx, WouldBlock

__all__ = ["BatchWriter", "NotDurable"]

log = logging.getLogger("clearance.engine")

#: An operation: runs inside the batch (on the writer thread, or the event loop's with ``inline``),
#: given the batch's transaction.
Operation = Callable[[SqlTx], Any]
_Item = tuple[Operation, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class NotDurable(Exception):
    """The operation was committed, but the fsync that was to make it durable failed."""


class BatchWriter:
    """One writer thread (or, with ``inline``, the event loop's) deciding queued operations in
    batches of up to ``max_batch``.

    :meth:`submit` is called from an asyncio event loop and returns a future of that loop; the
    loop is woken once per batch, not once per operation.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 64, overlap_sync: bool = False, inline: bool = False) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.overlap_sync = overlap_sync
        # Batches decided on the event loop's own thread (see the module's docstring): only when
        # their commits do not wait for the disk, else the loop would wait for every fsync.
        self.inline = inline and overlap_sync and engine.store.defers_sync
        self._inline: deque[_Item] = deque()
        self._drain_scheduled = False
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Committed batches waiting for their fsync (overlap_sync), and the thread doing it.
        self._unsynced: list[tuple[list[_Item], list[tuple[bool, Any]]]] = []
        self._sync_cond = threading.Condition(threading.Lock())
        self._sync_stopping = False
        self._syncer: threading.Thread | None = None
        self.batches = self.operations = self.syncs = 0  # diagnostics

    def submit(self, operation: Operation) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._stopping:
            raise RuntimeError("the batch writer is stopped")
        if self.inline:
            # Decided once the loop has run what is ready now: requests that arrived together
            # are queued by then and share the batch.
            self._inline.append((operation, future, loop))
            if not self._drain_scheduled:
                self._drain_scheduled = True
                loop.call_soon(self._drain)
            return future
        self._enqueue([(operation, future, loop)])
        return future

    def _enqueue(self, items: list[_Item]) -> None:
        """Hand operations to the writer thread."""
        with self._cond:
            self._queue.extend(items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clearance-batch-writer", daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()

    def _drain(self) -> None:
        """On the event loop: decide one batch of what is queued, without waiting for a lock (when
        another writer holds the store, the writer thread waits for it instead)."""
        self._drain_scheduled = False
        queue = self._inline
        n = min(len(queue), self.max_batch)
        if n == 0:
            return
        batch = [queue.popleft() for _ in range(n)]
        if queue:  # the rest after the loop has had its turn
            self._drain_scheduled = True
            batch[0][2].call_soon(self._drain)
        if not self._decide(batch, blocking=False):
            self._enqueue(batch)

    def stop(self) -> None:
        if self._inline:  # queued on the loop, which is busy stopping us: the thread decides them
            self._enqueue(list(self._inline))
            self._inline.clear()
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        with self._sync_cond:  # after the writer: its last batches are synced and handed back
            self._sync_stopping = True
            self._sync_cond.notify()
            syncer = self._syncer
        if syncer is not None:
            syncer.join(timeout=30)

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

    def _decide(self, batch: list[_Item], blocking: bool = True) -> bool:
        """Decide a batch and see its results handed back; False (and nothing done) when
        ``blocking`` is False and another writer holds the store."""
        outcomes: list[tuple[bool, Any]] = []
        store = self.engine.store
        overlap = self.overlap_sync
        try:
            with store.batch(sync=not overlap, blocking=blocking) as tx:
                for operation, _, _ in batch:
                    try:
                        with store.write() as own:  # a savepoint: a failure undoes this one alone
                            outcomes.append((True, operation(own)))
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        outcomes.append((False, exc))
        except WouldBlock:  # raised on entering the batch, before any operation ran
            return False
        except BaseException as exc:  # the commit (or the batch) failed: none of it happened
            log.warning("a batch of %d operations failed to commit: %s", len(batch), exc)
            outcomes = [(False, exc)] * len(batch)
            if not isinstance(exc, Exception):
                self._hand_back(batch, outcomes)
                raise
        self.batches += 1
        self.operations += len(batch)
        if overlap and any(ok for ok, _ in outcomes):
            with self._sync_cond:  # handed back once the fsync after this commit is done
                self._unsynced.append((batch, outcomes))
                if self._syncer is None:
                    self._syncer = threading.Thread(target=self._sync_run, name="clearance-batch-sync", daemon=True)
                    self._syncer.start()
                else:
                    self._sync_cond.notify()
            return True
        self._hand_back(batch, outcomes)
        return True

    def _sync_run(self) -> None:
        store = self.engine.store
        while True:
            with self._sync_cond:
                while not self._unsynced and not self._sync_stopping:
                    self._sync_cond.wait()
                if not self._unsynced:
                    return  # stopping, and every batch handed back
                pending, self._unsynced = self._unsynced, []
            try:
                store.sync()  # covers every batch in pending: each committed before it began
                self.syncs += 1
            except BaseException as exc:  # noqa: BLE001 - the callers are told; the thread goes on
                log.error("the fsync after %d batches failed; their decisions may not be durable: %s", len(pending), exc)
                failed = NotDurable(f"committed, but the fsync that makes it durable failed: {exc}")
                pending = [(batch, [(False, failed if ok else value) for ok, value in outcomes])
                           for batch, outcomes in pending]  # fmt: skip
            for batch, outcomes in pending:
                self._hand_back(batch, outcomes)

    @staticmethod
    def _hand_back(batch: list[_Item], outcomes: list[tuple[bool, Any]]) -> None:
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
