"""Long blocking reads on Redis that a stop or a pause can still cut short.

An idle consumer waits in ``BLMOVE``/``XREADGROUP ... BLOCK`` for :data:`IDLE_WAIT` seconds
instead of half a second: a few hundred idle consumers then cost a few wake-ups a second instead
of hundreds. What used to bound the reaction to a stop (the short wait) is replaced by a wake:
each blocking read runs on a connection of its own whose ``CLIENT ID`` is known, and
:meth:`BlockingReader.wake` has a side connection (one per Redis URL per process, on a thread of
its own) send ``CLIENT UNBLOCK`` to it, which ends the read as a timeout would.

A wake that comes just before the read starts would be lost, so it also sets a flag the read
checks before blocking, and the side thread repeats the unblock while the flag stays set (the
read clears it), for up to a second, or until an unblock ended a read.

A server that refuses ``CLIENT ID`` or ``CLIENT UNBLOCK`` to this user (an ACL without
``@dangerous``, a managed Redis that renames ``CLIENT``) gets polled reads instead
(:func:`open_reader` returns ``None``), as Sentinel and cluster URLs do.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import suppress
from typing import Any

import redis
import structlog
from redis import exceptions as redis_errors

from consumer_host.redaction import redact_url

from .redis_common import make_client

_log = structlog.get_logger("consumer_host.transport")

#: How long the side thread keeps unblocking a reader whose flag is still set.
_RETRY_FOR = 1.0
_RETRY_EVERY = 0.02


class BlockingReader:
    """The connection a consumer's blocking reads go through, and its wake flag."""

    def __init__(
        self, url: str, *, connect_timeout: float, socket_timeout: float, instance: str = "client"
    ) -> None:
        self.url = url
        self.client: redis.Redis = make_client(
            url,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            instance=instance,  # named for its consumer, as its other connections are
            single_connection_client=True,
        )
        try:
            self.id = int(self.client.client_id())
            self.client.client_unblock(self.id)  # allowed? (0: we are not blocked)
        except BaseException:
            self.close()
            raise
        #: The longest a read may block: a second inside the socket timeout, which is what
        #: notices a dead link (``heartbeat`` on Redis), so a quiet link is not taken for one.
        self.longest = max(0.05, socket_timeout - 1.0)
        self._woken = threading.Event()

    def woken(self) -> bool:
        """``True`` once per wake: the caller returns instead of blocking."""
        if self._woken.is_set():
            self._woken.clear()
            return True
        return False

    def wake(self) -> None:
        """Cut the current (or the next) blocking read short; from any thread."""
        self._woken.set()
        _waker_for(self.url).unblock(self)

    def still_woken(self) -> bool:
        return self._woken.is_set()

    def close(self) -> None:
        with suppress(redis_errors.RedisError, OSError):
            self.client.close()


def open_reader(
    url: str, *, connect_timeout: float, socket_timeout: float, instance: str = "client"
) -> BlockingReader | None:
    """A reader for woken reads on ``url``; ``None`` where the server refuses the commands a
    wake needs (said once per URL): the caller polls, as on Sentinel and cluster URLs."""
    try:
        return BlockingReader(
            url, connect_timeout=connect_timeout, socket_timeout=socket_timeout, instance=instance
        )
    except redis_errors.ResponseError as exc:  # NoPermissionError, an unknown command
        if url not in _unwakeable:
            _unwakeable.add(url)
            _log.warning("redis_reads_polled", broker=redact_url(url), reason=str(exc))
        return None


_unwakeable: set[str] = set()


class _Waker:
    """One side connection and thread per Redis URL per process, sending ``CLIENT UNBLOCK``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._requests: queue.SimpleQueue[BlockingReader] = queue.SimpleQueue()
        self._client: redis.Redis | None = None
        threading.Thread(target=self._run, name="redis-wake", daemon=True).start()

    def unblock(self, reader: BlockingReader) -> None:
        self._requests.put(reader)

    def _run(self) -> None:
        pending: dict[int, tuple[BlockingReader, float]] = {}
        while True:
            timeout = _RETRY_EVERY if pending else None
            with suppress(queue.Empty):
                reader = self._requests.get(timeout=timeout)
                pending[id(reader)] = (reader, time.monotonic() + _RETRY_FOR)
                while True:  # take the whole burst of a stop at once
                    reader = self._requests.get_nowait()
                    pending[id(reader)] = (reader, time.monotonic() + _RETRY_FOR)
            now = time.monotonic()
            live = {
                key: (reader, until)
                for key, (reader, until) in pending.items()
                if reader.still_woken() and now < until
            }
            pending = live
            if live:
                readers = [reader for reader, _ in live.values()]
                unblocked = self._send([reader.id for reader in readers])
                # A read that was ended needs no more; one not yet begun is tried again.
                for reader, done in zip(readers, unblocked, strict=False):
                    if done:
                        pending.pop(id(reader), None)

    def _send(self, ids: list[int]) -> list[bool]:
        """``CLIENT UNBLOCK`` each id; which of them were blocked (and are no more)."""
        try:
            client = self._client
            if client is None:
                client = make_client(self.url, connect_timeout=2.0, socket_timeout=2.0)
                self._client = client
            pipe: Any = client.pipeline(transaction=False)
            for client_id in ids:
                pipe.client_unblock(client_id)
            return [bool(result) for result in pipe.execute()]
        except Exception:  # noqa: BLE001 - this thread serves every reader of the URL: it lives on
            # The next pass tries again on a new connection; a reader that is never woken
            # still ends its read within IDLE_WAIT.
            if self._client is not None:
                with suppress(redis_errors.RedisError, OSError):
                    self._client.close()
            self._client = None
            return []


_wakers: dict[str, _Waker] = {}
_wakers_lock = threading.Lock()


def _waker_for(url: str) -> _Waker:
    with _wakers_lock:
        waker = _wakers.get(url)
        if waker is None:
            waker = _wakers[url] = _Waker(url)
        return waker
