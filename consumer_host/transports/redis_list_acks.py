"""Redis list acks, batched: the ``LREM`` of every finished message in one script call, before
the next fetch or once the oldest waited 50 ms, and before anything that reads the processing
list (a retry or dead-letter copy, a requeue, the recovery of a connect or a close).

A flusher thread sends a batch that has waited ``max_delay`` even while the connection thread
sits in a long handler. A crash before the send can only redeliver: a message leaves the
processing list only by its ``LREM``.

Why "before": an ``LREM`` removes the first equal entry it finds, and a recovery gives back
whatever the processing list holds. A finished message whose ``LREM`` still waited here would be
handed out again by the recovery, and an ``LREM`` sent after a fetch could remove a new delivery
of the same bytes (a producer's duplicate, a swept message) while its handler runs. So every
send is serialised (the owner's flush waits for one the flusher has on the wire) and the owner
flushes first.

Handles whose send failed (the connection dropped) are kept, across a reconnect, and sent on the
next connection before its recovery: the processing list is keyed by the consumer id, which a
reconnect keeps, so they are still there. Dropping them would give every one back to the queue.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis import exceptions as redis_errors

from consumer_host.clock import Clock

MAX_ACK_DELAY = 0.05

#: KEYS: processing; ARGV: the finished entries. One round trip for a whole batch: redis-py
#: spends about a fifth of a pipeline's client CPU on one call with many arguments.
LIST_ACK = """
for i = 1, #ARGV do redis.call('LREM', KEYS[1], -1, ARGV[i]) end
return #ARGV
"""


class ListAcks:
    """The handles of one consumer's finished messages not yet removed from its processing list."""

    def __init__(self, processing: str, clock: Clock, max_delay: float = MAX_ACK_DELAY) -> None:
        self.processing = processing
        self._clock = clock
        self._max_delay = max_delay
        self._handles: list[bytes] = []
        self._oldest = 0.0
        self._lock = threading.Lock()  # guards the handles; the flusher shares them
        self._sending = threading.Lock()  # one send at a time, in the order they were taken
        self._pending = threading.Event()
        self._flusher_stop = threading.Event()
        self._script: Any = None

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, handle: bytes) -> None:
        with self._lock:
            if not self._handles:
                self._oldest = self._clock.now()
                self._pending.set()
            self._handles.append(handle)

    def flush(self) -> None:
        """Send what waits, now (from the connection's owner); raises what the send raised,
        with the handles kept for the next connection."""
        if self._handles or self._sending.locked():
            self._send()

    def start(self, client: redis.Redis, name: str) -> None:
        """A new connection: send through ``client``, and start its flusher thread."""
        self._script = client.register_script(LIST_ACK)
        self._flusher_stop = stop = threading.Event()
        with self._lock:
            # stop() set it to wake the previous flusher; handles kept across a reconnect (see
            # _send) are still pending for the new one.
            if not self._handles:
                self._pending.clear()
        threading.Thread(target=self._flush_when_due, args=(stop,), name=name, daemon=True).start()

    def stop(self) -> None:
        """The connection is going: end its flusher (the handles stay)."""
        self._flusher_stop.set()
        self._pending.set()  # wake the flusher so it sees the stop

    def _send(self) -> None:
        with self._sending:
            with self._lock:
                handles, self._handles = self._handles, []
                self._pending.clear()
            if not handles:
                return
            try:
                self._script(keys=[self.processing], args=handles)
            except BaseException:
                self._restore(handles)
                raise

    def _restore(self, handles: list[bytes]) -> None:
        """Put back handles whose send did not go through, ahead of any added since."""
        with self._lock:
            if not self._handles:
                self._oldest = self._clock.now()
            self._handles = handles + self._handles
            self._pending.set()

    def _flush_when_due(self, stop: threading.Event) -> None:
        """Send a batch once it is ``max_delay`` old, whatever the owner does."""
        while not stop.is_set():
            self._pending.wait()
            if stop.is_set():
                return
            wait = self._max_delay - (self._clock.now() - self._oldest)
            if wait > 0:
                self._clock.wait(stop, wait)
                continue
            try:
                self._send()
            except redis_errors.RedisError:
                # The owner sees the outage and reconnects; the handles go out on the new link.
                self._clock.wait(stop, self._max_delay)
