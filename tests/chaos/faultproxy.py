"""An asyncio TCP proxy the tests put between the host and a broker, to break the connection.

Its loop runs in a daemon thread, so synchronous tests call plain methods:

    proxy = FaultProxy(("127.0.0.1", 5672)).start()   # listen on proxy.port
    proxy.cut()                  # reset every open connection (RST, not FIN)
    proxy.offline(); proxy.online()   # cut, and reset new connections until online()
    proxy.blackhole(); proxy.forward()  # accept, keep open, forward nothing; then flow again
    proxy.slow(0.2)              # delay every chunk by 200 ms
    proxy.stats                  # accepted, cuts, refused, bytes each way
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.upstream = upstream
        self.listen = listen
        self.port = 0
        self.stats = {"accepted": 0, "cuts": 0, "refused": 0, "up": 0, "down": 0}
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._refusing = False
        self._delay = 0.0
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._ready = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        self._call(self._reset_all)
        # Cancel and await every connection's task: a task left pending when the loop stops is
        # destroyed later, which Python reports as an unraisable exception.
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, *self.listen)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _call(self, fn: Any, *args: Any) -> Any:
        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(5)

    # -- faults ----------------------------------------------------------------------------------

    def cut(self) -> None:
        self._call(self._reset_all)

    def offline(self) -> None:
        self._refusing = True
        self.cut()

    def online(self) -> None:
        self._refusing = False

    def blackhole(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def forward(self) -> None:
        """Normal forwarding again (ends a black hole and any slowness)."""
        assert self._flowing is not None
        self._delay = 0.0
        self._loop.call_soon_threadsafe(self._flowing.set)

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    # -- plumbing --------------------------------------------------------------------------------

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self.stats["cuts"] += 1
        self._writers.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.stats["refused"] += 1
            _reset(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(client_w)
            return
        self.stats["accepted"] += 1
        self._writers.update((client_w, server_w))
        pair = (client_w, server_w)
        await asyncio.gather(
            self._pipe(client_r, server_w, "up", pair),
            self._pipe(server_r, client_w, "down", pair),
            return_exceptions=True,
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        assert self._flowing is not None
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                self.stats[direction] += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for side in pair:
                self._writers.discard(side)
                with contextlib.suppress(Exception):
                    side.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees a TCP reset, as when a network drops a flow."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
