"""The gateway's stdin and stdout for the SDK's ``stdio_server``, read and written on the event loop.

Left to itself, ``stdio_server`` wraps the standard streams in anyio's file wrapper, which runs
every readline, write and flush in a worker thread: three thread hops on each call's path. It
takes the streams it is given as they are, so these read and write the same pipes with
asyncio's pipe transports instead, without a thread. As the SDK does for its own, the standard
descriptors are moved aside while serving (fd 0 reads the null device, fd 1 writes to stderr),
so stray output from this process or its children cannot corrupt the protocol, and are put
back on exit.

Only pipes and sockets (what a client that launches the gateway connects it with): a terminal
or a file is left to the SDK's own threaded streams (asyncio would make a shared terminal
non-blocking, and cannot watch a file).
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

__all__ = ["LineReader", "LineWriter", "event_loop_stdio"]

#: The longest line (one JSON-RPC message) read; the buffer only grows as far as a line needs.
LINE_LIMIT = 1 << 30


class LineReader:
    """The lines of a pipe, as text, in the shape ``stdio_server`` iterates (``async for line in stdin``)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class LineWriter:
    """Text written to a pipe, in the shape ``stdio_server`` writes (``write`` then ``flush``)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))
        await self._writer.drain()  # waits only while the client does not keep up

    async def flush(self) -> None:
        """Nothing is buffered here: each write went to the pipe."""


def _streamable(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@asynccontextmanager
async def event_loop_stdio() -> AsyncIterator[tuple[LineReader, LineWriter] | None]:
    """This process's stdin and stdout as streams the event loop serves, or ``None`` where they
    are not both pipes or sockets (or not on POSIX): then the SDK's own streams are used."""
    if sys.platform == "win32" or not (_streamable(0) and _streamable(1)):
        yield None
        return
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        # The wire on descriptors of our own; 0 and 1 diverted until we are done.
        wire_in, wire_out = os.dup(0), os.dup(1)
        stack.callback(_restore, 0, wire_in)
        stack.callback(_restore, 1, wire_out)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
        os.dup2(2, 1)
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        # The transports own (and close) file objects of their own on duplicates, so the
        # descriptors restored on exit stay open.
        in_file = os.fdopen(os.dup(wire_in), "rb", buffering=0)
        out_file = os.fdopen(os.dup(wire_out), "wb", buffering=0)
        read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), in_file)
        stack.callback(read_transport.close)
        write_transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out_file)
        stack.callback(write_transport.close)
        writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
        yield LineReader(reader), LineWriter(writer)


def _restore(fd: int, wire: int) -> None:
    """Point ``fd`` back at the wire (as blocking as it was given to us) and drop our copy."""
    try:
        os.set_blocking(wire, True)  # the transports made the shared description non-blocking
        os.dup2(wire, fd)
    except OSError:
        pass
    finally:
        os.close(wire)
